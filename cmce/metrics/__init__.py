"""Pure numpy metrics for face retrieval, verification and uncertainty rejection.

Every function here is a small, side-effect-free function of numpy arrays (no
torch, no global state, no printing). Inputs are validated and anything invalid
raises :class:`cmce.errors.CmceError` with a message that says what is valid.

One module per concept; import each name from its module (this package re-exports
nothing):

* ``retrieval``: ``l2_normalise``, ``recall_at_k``, ``mean_average_precision``,
  ``top1_hits``, ``entry_misses``;
* ``verification``: ``verification_scores``, ``threshold_at_far``, ``tar_at_far``,
  ``best_verification_accuracy``;
* ``rejection``: ``rejection_curve``, ``gallery_rejection_mask``, ``threshold_for_rate``;
* ``intervals``: ``bootstrap_mean_ci``, ``cluster_bootstrap``, ``tar_at_far_cluster_ci``,
  ``relative_error_reduction``;
* ``clustering``: ``bcubed``, ``bcubed_items``, ``pairwise_prf``;
* ``uncertainty``: ``mean_pairwise_cosine_distance``;
* ``_inputs``: the shared input checks.
"""

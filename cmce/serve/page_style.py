"""The demo page's CSS: layout, the result frames and legend, the verdict line, the picture pickers
and the phone layout (``app.py`` passes it to ``gr.Blocks``)."""

__all__ = ["PAGE_CSS"]

PAGE_CSS = """
.cmce-results-head{font-size:.9rem;margin:2px 0 8px}
.cmce-results{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:10px}
.cmce-view{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px;min-width:0}
.cmce-view h4{margin:0 0 6px;font-size:.95rem}
.cmce-verdict{padding:6px 8px;border-radius:6px;margin-bottom:8px;font-size:.82rem;line-height:1.3;
  background:var(--background-fill-secondary)}
.cmce-verdict span{font-size:.75rem;opacity:.85}
.cmce-verdict.cmce-correct{background:#e6f4ea;color:#0d3d1a}
.cmce-verdict.cmce-wrong{background:#fce8e6;color:#5c0a05}
.cmce-person{margin:0 0 8px;padding:6px;border:1px solid var(--border-color-primary);border-radius:6px}
.cmce-person-head{margin:0 0 4px}.cmce-unsure{border-style:dashed}
.cmce-person-face{width:64px;height:64px;object-fit:cover;border-radius:4px;margin:0 4px 4px 0!important;display:inline-block!important}
.cmce-matches{list-style:none;padding:0!important;margin:0!important}
.cmce-match{display:flex;gap:8px;align-items:center;padding:4px;margin:0 0 4px!important;border-radius:6px;
  border:2px solid var(--border-color-primary);font-size:.78rem;line-height:1.3}
.cmce-match img{width:56px;height:56px;object-fit:cover;border-radius:4px;flex:none;margin:0!important}
.cmce-match.cmce-correct{border-color:#1e8e3e;background:#e6f4ea;color:#0d3d1a}
.cmce-match.cmce-wrong{border-color:#d93025;background:#fce8e6;color:#5c0a05}
.cmce-match.cmce-below{opacity:.6}
.cmce-match.cmce-doubtful{border-style:dashed;border-color:#e37400}
.cmce-doubt-tag{color:#b06000;font-weight:600;white-space:nowrap}
.cmce-verdict.cmce-doubtful{background:#fef7e0;color:#5c3c00}
.cmce-meta{min-width:0}
.cmce-label{font-weight:600;overflow-wrap:anywhere}
.cmce-members{font-size:.7rem;opacity:.8}
.cmce-empty{font-size:.8rem;opacity:.7}
.cmce-legend{display:flex;flex-wrap:wrap;gap:2px 14px;font-size:.75rem;margin:0 0 8px}
.cmce-key{padding-left:6px;border-left:4px solid var(--border-color-primary)}
.cmce-key.cmce-correct{border-left-color:#1e8e3e}.cmce-key.cmce-wrong{border-left-color:#d93025}
.cmce-key.cmce-doubtful{border-left:4px dashed #e37400}.cmce-key.cmce-rejected{border-left-color:#7b1fa2}
#overview .grid-container{grid-template-columns:repeat(auto-fill,minmax(120px,1fr))!important}
#overview .thumbnail-item{aspect-ratio:auto!important;height:auto!important;display:flex;flex-direction:column;
  align-items:stretch}
#overview .thumbnail-item img{height:110px!important;width:100%;object-fit:contain}
#overview .caption-label{font-size:11px;padding:1px 4px;white-space:normal;line-height:1.25;overflow-wrap:anywhere;
  position:static!important;max-width:100%!important;transform:none!important;margin:0!important;border-radius:0}
.cmce-verdict-line{padding:6px 10px;border-radius:6px;margin:0 0 8px;font-size:.9rem;line-height:1.35;
  background:var(--background-fill-secondary);border:1px solid var(--border-color-primary)}
.cmce-verdict-line span{font-size:.8rem;opacity:.85}
.cmce-verdict-line.cmce-correct{background:#e6f4ea;color:#0d3d1a}
.cmce-verdict-line.cmce-wrong{background:#fce8e6;color:#5c0a05}
.cmce-step h3{margin:0!important}
.cmce-picks .grid-container{grid-template-columns:repeat(auto-fill,minmax(84px,1fr))!important}
#example-galleries .grid-container{grid-template-columns:repeat(auto-fill,minmax(120px,1fr))!important}
.cmce-picks .caption-label{white-space:normal;overflow-wrap:anywhere;max-width:calc(100% - 6px);font-size:10px;
  line-height:1.15;padding:1px 3px}
#one-click .grid-container{grid-template-columns:repeat(auto-fill,minmax(120px,1fr))!important}
#header .prose h1{margin-bottom:4px}
#scoreboard table{font-size:.82rem}
#risk-plot .matplotlib,#hist-plot .matplotlib{padding-top:30px}
.cmce-match{cursor:pointer}.cmce-match:hover{outline:2px solid var(--color-accent)}
#match-photo img{object-fit:contain}
#scoreboard th,#scoreboard td{padding:4px 8px;overflow-wrap:normal;word-break:normal;hyphens:none}
#scoreboard td:first-child{white-space:nowrap}
#intro p{font-size:.9rem;margin:0}
@media (max-width:640px){
  .cmce-results{display:flex;overflow-x:auto;scroll-snap-type:x mandatory;gap:8px;padding-bottom:6px}
  .cmce-view{flex:0 0 86%;scroll-snap-align:start}
  .cmce-verdict-line{position:sticky;top:0;z-index:5}
  .cmce-results-head::after{content:" · swipe for the other columns →";opacity:.7}
  #overview .grid-container{grid-template-columns:repeat(auto-fill,minmax(104px,1fr))!important}
  #overview .thumbnail-item img{height:90px!important}
  #scoreboard table{font-size:.72rem}
  #scoreboard th,#scoreboard td{padding:3px 4px}
  #scoreboard td:first-child{white-space:normal}
}
"""

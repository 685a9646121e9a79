"""The COCO-17 skeleton: joint names and order, the limbs drawn between joints, and how both mirror.

One place for these facts, because the heatmap renderer, the pose backends, the pictures and the
training flip must all agree on them: a model trained on one joint or limb order needs that order
forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COCO17_JOINT_NAMES",
    "COCO17_FLIP_PERM",
    "LimbSet",
    "LimbsArg",
    "COCO_LIMBS",
    "COCO_LIMBS_POSEC3D_CONFIG",
    "limb_flip_perm",
]

# COCO-17 joint order (COCO keypoints, as PoseC3D's and MMPose's COCO models emit them).
COCO17_JOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
# Joint v of a mirrored person is joint COCO17_FLIP_PERM[v] of the original: PoseC3D's left_kp (1,
# 3, ..., 15) swapped with right_kp (2, 4, ..., 16), the nose kept.
COCO17_FLIP_PERM = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


@dataclass(frozen=True)
class LimbSet:
    """An ordered list of limbs (joint index pairs) and the channel permutation that mirrors it.

    The order fixes the channel order of limb volumes, so a model trained on one order needs the
    same order (and the matching flip permutation) forever: the two travel together here. Channel k
    of a mirrored volume is channel `flip_perm[k]` of the original. `LimbSet.from_joint_flip`
    derives the permutation.
    """

    limbs: tuple[tuple[int, int], ...]
    flip_perm: tuple[int, ...]

    def __post_init__(self) -> None:
        limbs = tuple((int(i), int(j)) for i, j in self.limbs)
        flip_perm = tuple(int(k) for k in self.flip_perm)
        object.__setattr__(self, "limbs", limbs)
        object.__setattr__(self, "flip_perm", flip_perm)
        if sorted(flip_perm) != list(range(len(limbs))):
            raise ValueError(
                f"flip_perm {flip_perm} is not a permutation of the {len(limbs)} limb indices"
            )
        if any(flip_perm[flip_perm[k]] != k for k in range(len(limbs))):
            raise ValueError(
                f"flip_perm {flip_perm} must swap pairs (flipping twice gives the identity)"
            )

    @classmethod
    def from_joint_flip(
        cls, limbs: Sequence[tuple[int, int]], joint_flip_perm: Sequence[int]
    ) -> LimbSet:
        """The limb set whose flip permutation follows from the joints' left/right permutation."""
        return cls(tuple(limbs), limb_flip_perm(limbs, joint_flip_perm))

    def __len__(self) -> int:
        return len(self.limbs)


# PoseC3D's GeneratePoseTarget default `skeletons`, in its order. Its left/right limb lists in code
# are (0, 2, 4, 5, 6, 10, 11, 12) / (1, 3, 7, 8, 9, 13, 14, 15) (the docstring says otherwise; the
# code wins); the hips limb (11, 12) maps onto itself.
COCO_LIMBS = LimbSet(
    limbs=(
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (0, 5),
        (5, 7),
        (7, 9),
        (0, 6),
        (6, 8),
        (8, 10),
        (5, 11),
        (11, 13),
        (13, 15),
        (6, 12),
        (12, 14),
        (14, 16),
        (11, 12),
    ),
    flip_perm=(1, 0, 3, 2, 7, 8, 9, 4, 5, 6, 13, 14, 15, 10, 11, 12, 16),
)
# The order of PoseC3D's limb-model configs (and their checkpoints): left limbs [0, 2, 3, 6, 7, 8,
# 12, 14], right limbs [1, 4, 5, 9, 10, 11, 13, 15]. Use it to match PoseC3D limb checkpoints.
COCO_LIMBS_POSEC3D_CONFIG = LimbSet(
    limbs=(
        (0, 5),
        (0, 6),
        (5, 7),
        (7, 9),
        (6, 8),
        (8, 10),
        (5, 11),
        (11, 13),
        (13, 15),
        (6, 12),
        (12, 14),
        (14, 16),
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (11, 12),
    ),
    flip_perm=(1, 0, 4, 5, 2, 3, 9, 10, 11, 6, 7, 8, 13, 12, 15, 14, 16),
)

LimbsArg = LimbSet | Sequence[tuple[int, int]]


def limb_flip_perm(
    limbs: Sequence[tuple[int, int]], joint_flip_perm: Sequence[int]
) -> tuple[int, ...]:
    """Channel permutation of a limb list under a horizontal flip, derived from the joints'
    permutation.

    Limb (i, j) of a mirrored person is the limb between joints perm[i] and perm[j] of the original;
    its channel is wherever that unordered pair sits in `limbs`. The list must be closed under the
    flip.
    """
    perm = tuple(int(v) for v in joint_flip_perm)
    pairs = [(int(i), int(j)) for i, j in limbs]
    where = {frozenset(pair): k for k, pair in enumerate(pairs)}
    if len(where) != len(pairs):
        raise ValueError(f"limb list {pairs} names the same joint pair twice")
    out = []
    for i, j in pairs:
        if max(i, j) >= len(perm):
            raise ValueError(
                f"limb ({i}, {j}) uses a joint beyond the {len(perm)} of the joint flip permutation"
            )
        mirrored = frozenset((perm[i], perm[j]))
        if mirrored not in where:
            raise ValueError(
                f"limb ({i}, {j}) mirrors to ({perm[i]}, {perm[j]}), which is not in the limb "
                "list; add it so the list is closed under the flip"
            )
        out.append(where[mirrored])
    return tuple(out)

"""Per-image detections as numpy arrays: what every detector returns and every drawing reads.

A leaf module (numpy only), so that drawing, inference and the detectors share the type without
importing each other or TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np


@dataclasses.dataclass
class Detections:
    """Detections of one image, best first.

    boxes: [n, 4] float32 yxyx in original-image pixels; scores: [n] float32; classes: [n] int32
    class ids 1..num_classes.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def filter(self, score_thresh: Optional[float] = None,
               max_output_size: Optional[int] = None) -> Detections:
        """Keep scores > score_thresh (as the NMS threshold does), then the first
        max_output_size."""
        keep = np.ones(len(self), bool) if score_thresh is None else self.scores > score_thresh
        boxes, scores, classes = self.boxes[keep], self.scores[keep], self.classes[keep]
        if max_output_size is not None:
            boxes = boxes[:max_output_size]
            scores, classes = scores[:max_output_size], classes[:max_output_size]
        return Detections(boxes, scores, classes)


def split_detections(outputs: Dict[str, np.ndarray], count: Optional[int] = None
                     ) -> List[Detections]:
    """Per-image `Detections` from batched outputs (boxes, scores, classes, num_detections) of
    the serving graph; only the first `count` images (default: all)."""
    nums = np.asarray(outputs["num_detections"]).reshape(-1).astype(int)
    count = len(nums) if count is None else count
    return [Detections(np.asarray(outputs["boxes"][i, :n], np.float32),
                       np.asarray(outputs["scores"][i, :n], np.float32),
                       np.asarray(outputs["classes"][i, :n]).astype(np.int32))
            for i, n in zip(range(count), nums)]

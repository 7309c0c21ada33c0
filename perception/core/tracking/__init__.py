"""Multi-object tracking of 2D boxes (pure numpy; scipy or lap for assignment).

`Tracker` follows one camera; `MultiCameraTracker` keeps one per frame_id
(trusted inputs only). Both take and return `perception.core.types.Detections`.
`keep_best` caps the rows of a message before tracking or fusion.
"""

from perception.core.tracking.config import TrackerConfig, TrackerConfigError
from perception.core.tracking.limits import keep_best
from perception.core.tracking.matching import iou_matrix, linear_assignment
from perception.core.tracking.multi import MultiCameraTracker
from perception.core.tracking.tracker import Tracker, TrackerStats, TrackInfo, TrackState

__all__ = [
    "MultiCameraTracker",
    "TrackInfo",
    "TrackState",
    "Tracker",
    "TrackerConfig",
    "TrackerConfigError",
    "TrackerStats",
    "iou_matrix",
    "keep_best",
    "linear_assignment",
]

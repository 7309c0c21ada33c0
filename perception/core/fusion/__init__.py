"""3D perception without ROS: depth lifting, LiDAR fusion, stamp matching.

Modules (import by path; open3d is imported lazily by `lidar` only):
`types` (Objects3D), `depth` (DepthLifter), `pointcloud` (cloud_xyz),
`lidar` (LidarFusion), `sync` (StampSynchronizer), `synthetic` (test scenes),
`errors`.
"""

from perception.core.fusion.errors import (
    DepthImageError,
    FusionInputError,
    MissingExtrinsicsError,
    PointCloudFormatError,
)
from perception.core.fusion.types import Objects3D

__all__ = [
    "DepthImageError",
    "FusionInputError",
    "MissingExtrinsicsError",
    "Objects3D",
    "PointCloudFormatError",
]

"""Perception over recorded drives: `perception replay` (one machine or Ray).

Each input (rosbag2 folder, .mcap, video, or a text file listing them) runs
through the ROS-free pipeline of a pipeline file (config/pipeline_*.yaml,
the same parameters the live nodes use), timed only by message stamps, and
gets its own output folder: MCAP with standard ROS 2 messages, a per-frame
table, metrics against ground truth where the input carries it, a report.
"""

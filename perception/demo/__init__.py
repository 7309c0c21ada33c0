"""One-command demo: the pipeline as ROS 2 processes on a synthetic scenario
(or a real video), scored into a report with an overlay video and plots."""

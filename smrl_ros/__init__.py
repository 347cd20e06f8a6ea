"""smrl_ros: thin rclpy nodes over the smrl_train core."""

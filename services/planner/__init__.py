"""planner: validates deploy requests and places VMs on hosts with room for them."""

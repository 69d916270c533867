"""Starting and stopping the whole snapdeploy system on one machine."""

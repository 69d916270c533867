"""cloner: linked-clones seeded templates into running VMs."""

"""seeder: seeds a VM snapshot's root disk as a template on its pool, once per pool."""

"""The common library of snapdeploy's services: storage, bus, projections, drivers, runtime."""

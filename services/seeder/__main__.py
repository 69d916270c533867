"""python -m services.seeder: seed VM snapshots as templates on their pools, once each."""

from services.seeder.handlers import Seeder
from shared.runtime import Runtime

if __name__ == "__main__":
    Runtime("seeder").serve(
        Seeder, "Seed VM snapshots as templates on their primary storage pools.")

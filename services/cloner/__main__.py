"""python -m services.cloner: clone seeded templates into running VMs; VM snapshot work."""

from services.cloner.handlers import Cloner
from shared.runtime import Runtime

if __name__ == "__main__":
    Runtime("cloner").serve(Cloner, "Linked-clone seeded templates into running VMs.")

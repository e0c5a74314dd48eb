"""``python -m localentropy.experiments.speed [options]``: the speed benchmark (:mod:`.run_all`)."""

from localentropy.experiments.speed.run_all import run

if __name__ == "__main__":
    run()

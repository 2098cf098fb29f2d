"""`python -m tfq8`: the `tfq8` command, where its console script is not on PATH.

Example:
    $ python -m tfq8 inspect model_int8.tflite --json
"""

from tfq8.cli import run

if __name__ == "__main__":  # pragma: no cover
    run()

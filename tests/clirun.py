"""Runs the `tfq8` command line in-process, as a shell would see it."""

from tfq8 import cli


def run_cli(capfd, *argv):
    """Runs `tfq8 *argv` in this process; returns (exit code, stdout, stderr).

    Example:
        >>> code, out, err = run_cli(capfd, "inspect", "model.tflite", "--json")
    """
    capfd.readouterr()
    try:
        cli.run(["tfq8", *map(str, argv)])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capfd.readouterr()
    return code, out, err

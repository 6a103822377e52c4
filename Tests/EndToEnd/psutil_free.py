"""Child-process lookup from /proc, so the tests need no psutil."""
import os


def children_named(parent: int, name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == parent and comm == name:
            found.append(int(entry))
    return found


def worker_ranks(parent: int) -> dict[int, int]:
    """The router's spawned workers by rank (from each one's `--rank N`)."""
    ranks = {}
    for pid in children_named(parent, "worker"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"--rank" in args:
            ranks[int(args[args.index(b"--rank") + 1])] = pid
    return ranks

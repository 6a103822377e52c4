"""Pretend hosts on one machine: network namespaces joined by veth pairs to a bridge, each with
its own address on a private /24, so processes in them can reach each other only over TCP (no
shared loopback, no shared-memory group: each namespace is its own "host" to the network).
The machine itself gets the bridge's address (.254) and can reach every host.

    python3 scripts/netns_hosts.py up NAME COUNT     prints the hosts' addresses, one per line
    python3 scripts/netns_hosts.py down NAME
    python3 scripts/netns_hosts.py exec NAME INDEX -- COMMAND…

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`. Used by the multi-host
end-to-end test and by scripts/bench/tensor-parallel.sh."""
import os
import subprocess
import sys
import zlib


class NamespaceHosts:
    """`count` namespaces named NAME-0 …, on the bridge NAME's subnet 10.213.X.0/24 (X from NAME)."""

    def __init__(self, name: str, count: int):
        assert 1 <= count <= 200, "between 1 and 200 hosts"
        self.name = name
        self.count = count
        self.subnet = f"10.213.{zlib.crc32(name.encode()) % 250}"
        # Interface names are limited to 15 characters.
        self.tag = f"{zlib.crc32(name.encode()) % 100000:05d}"
        self.bridge = f"tbr{self.tag}"

    def namespace(self, index: int) -> str:
        return f"{self.name}-{index}"

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index + 1}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.254"

    def command(self, index: int, *argv: str) -> list[str]:
        """`argv` run inside host `index` (the process's pid is the command's own: ip execs it)."""
        return ["ip", "netns", "exec", self.namespace(index), *argv]

    @staticmethod
    def _ip(*argv: str) -> None:
        result = subprocess.run(["ip", *argv], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
                               " — network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2")

    def up(self) -> "NamespaceHosts":
        self.down()
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for index in range(self.count):
            ns, outside, inside = self.namespace(index), f"tvh{self.tag}{index}", f"tvn{self.tag}{index}"
            self._ip("netns", "add", ns)
            self._ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._ip("link", "set", outside, "master", self.bridge)
            self._ip("link", "set", outside, "up")
            self._ip("link", "set", inside, "netns", ns)
            self._ip("-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", inside)
            self._ip("-n", ns, "link", "set", inside, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        """Removes whatever of this set exists (deleting a namespace deletes its veth pair)."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
        for ns in (line.split()[0] for line in listed if line.strip()):
            if ns.startswith(self.name + "-") and ns[len(self.name) + 1:].isdigit():
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def __enter__(self) -> "NamespaceHosts":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "up":
        hosts = NamespaceHosts(argv[1], int(argv[2])).up()
        print("\n".join(hosts.address(i) for i in range(hosts.count)))
        return 0
    if len(argv) >= 2 and argv[0] == "down":
        NamespaceHosts(argv[1], 1).down()
        return 0
    if len(argv) >= 5 and argv[0] == "exec" and argv[3] == "--":
        hosts = NamespaceHosts(argv[1], int(argv[2]) + 1)
        os.execvp("ip", hosts.command(int(argv[2]), *argv[4:]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

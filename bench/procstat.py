"""
CPU time and memory of a process tree, read from /proc.

The CPU time of a tree is the sum, over every live process of the tree, of
its own user+sys time and of the user+sys time of its reaped children
(cutime+cstime): a child that exited during a measurement is counted in
its parent's cutime, a live one in its own utime.  The difference of two
readings is the CPU the tree used in between.
"""

import os
from typing import Dict, List

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> List[str]:
    with open("/proc/%d/stat" % (pid,)) as f:
        data = f.read()
    # The command name is in parentheses and may contain spaces.
    return data[data.rindex(")") + 2 :].split()


def _children() -> Dict[int, List[int]]:
    tree: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def processTree(pid: int) -> List[int]:
    """
    The process C{pid} and all its descendants (that are alive now).
    """
    tree = _children()
    result, todo = [], [pid]
    while todo:
        p = todo.pop()
        result.append(p)
        todo.extend(tree.get(p, []))
    return result


def cpuSeconds(pid: int, children: bool = True) -> float:
    """
    User+sys seconds used so far by the tree of C{pid} (see the module),
    or with C{children=False} by that process alone.
    """
    ticks = 0
    for p in processTree(pid) if children else [pid]:
        try:
            fields = _stat(p)
        except OSError:
            continue
        # fields[0] is the state; utime, stime, cutime, cstime are fields
        # 14..17 of stat(5), i.e. 11..14 here.
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / _TICKS


def userSystem(pid: int) -> "tuple[float, float]":
    """
    User and system seconds used so far by process C{pid} alone.
    """
    try:
        fields = _stat(pid)
    except OSError:
        return (0.0, 0.0)
    return (int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)


def rssBytes(pid: int) -> int:
    """
    The sum of VmRSS of the tree of C{pid}, in bytes.
    """
    total = 0
    for p in processTree(pid):
        try:
            with open("/proc/%d/status" % (p,)) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total

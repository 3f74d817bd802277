using System.Collections.Immutable;

namespace Sandbox.Cgroups;

/// <summary>
/// What the payload sees of its cgroup at /sys/fs/cgroup: the cgroup file systems mounted there,
/// read-only, inside the sandbox's cgroup namespace, whose root is the sandbox's own cgroup
/// (cgroup_namespaces(7)). Programs read their limits there: .NET's GC sizes its heap from
/// memory.max (v2) or memory.limit_in_bytes (v1) of the cgroup /proc/self/cgroup names, found through
/// /proc/self/mountinfo; without a mount of its own, the sandbox sees only the host's (or no)
/// hierarchy, whose root is not its cgroup, and .NET takes the host's memory as its budget.
/// </summary>
/// <param name="Unified">cgroup v2: one cgroup2 mount at /sys/fs/cgroup.</param>
/// <param name="V1Hierarchies">
/// cgroup v1: the controllers of each hierarchy the sandbox has a directory in, as mount data
/// ("memory", "cpu,cpuacct"). Each is mounted at /sys/fs/cgroup/NAME on a tmpfs, as hosts lay them
/// out; a mount in a cgroup namespace may only reuse a hierarchy, with exactly its controllers
/// (kernel/cgroup/cgroup-v1.c, cgroup1_root_to_use).
/// </param>
public sealed record CgroupView(bool Unified, ImmutableArray<string> V1Hierarchies)
{
    public static CgroupView V2 { get; } = new(true, []);

    public static CgroupView V1(IEnumerable<string> hierarchies) => new(false, [.. hierarchies.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)]);
}

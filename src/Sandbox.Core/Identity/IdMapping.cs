using System.Globalization;
using Sandbox.Runtime;

namespace Sandbox.Identity;

/// <summary>
/// The ids of a sandbox with a subordinate range, as the kernel maps them (newuidmap PID 0 UID 1 1
/// START COUNT, see <see cref="IdMapWriter"/>): inside 0 is the caller, inside 1..COUNT are
/// START..START+COUNT-1 on the host; any other id is unmapped (it shows as the overflow id,
/// 65534, and cannot be given to a file). The layer store writes image owners for exactly this
/// map, so that a <c>--userns subuid</c> run shows them as the image has them.
/// </summary>
public sealed record IdMapping(uint HostUid, uint HostGid, IdRange Uids, IdRange Gids)
{
    /// <summary>The mapping of a plan with a subordinate range; null for a single-id plan.</summary>
    public static IdMapping? Of(IdMapPlan plan) =>
        plan.Kind == IdMapKind.SubordinateRange && plan.SubordinateUids is { } uids && plan.SubordinateGids is { } gids
            ? new IdMapping(plan.HostUid, plan.HostGid, uids, gids)
            : null;

    /// <summary>The highest uid that exists inside (0..MaxUid are mapped).</summary>
    public long MaxUid => Uids.Count;

    /// <summary>The highest gid that exists inside.</summary>
    public long MaxGid => Gids.Count;

    /// <summary>The host uid that owns a file of uid <paramref name="id"/> inside; null when it is outside the map.</summary>
    public long? ToHostUid(long id) => ToHost(id, HostUid, Uids);

    /// <summary>The host gid of gid <paramref name="id"/> inside; null when it is outside the map.</summary>
    public long? ToHostGid(long id) => ToHost(id, HostGid, Gids);

    /// <summary>Whether a file owned by <paramref name="uid"/>:<paramref name="gid"/> inside can exist on disk under this map.</summary>
    public bool Covers(long uid, long gid) => ToHostUid(uid) is not null && ToHostGid(gid) is not null;

    private static long? ToHost(long id, uint caller, IdRange range) =>
        id == 0 ? caller
        : id >= 1 && id <= range.Count ? range.Start + id - 1
        : null;

    /// <summary>A stable text naming this map exactly (layer keys of the store are derived from it).</summary>
    public string Key => string.Create(CultureInfo.InvariantCulture,
        $"u0={HostUid},1-{Uids.Count}={Uids.Start};g0={HostGid},1-{Gids.Count}={Gids.Start}");

    /// <summary>For messages: <c>uids 0→1001, 1-65536→100000-165535; gids …</c>.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"uids 0→{HostUid}, 1-{Uids.Count}→{Uids.Start}-{Uids.Start + Uids.Count - 1}; gids 0→{HostGid}, 1-{Gids.Count}→{Gids.Start}-{Gids.Start + Gids.Count - 1}");
}

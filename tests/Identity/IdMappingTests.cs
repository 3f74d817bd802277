using Sandbox.Identity;
using Sandbox.Runtime;

namespace Sandbox.Tests.Identity;

/// <summary>The id arithmetic of a subordinate-range map: 0 → the caller, 1..N → START..START+N-1, nothing else.</summary>
public class IdMappingTests
{
    private static readonly IdMapping Map = new(1001, 1002, new IdRange(100000, 65536), new IdRange(200000, 1000));

    [TestCase(0L, 1001L)]
    [TestCase(1L, 100000L)]
    [TestCase(33L, 100032L)]
    [TestCase(1000L, 100999L)]
    [TestCase(65534L, 165533L)]
    [TestCase(65536L, 165535L)]
    public void UidsInsideTheMapGoToTheCallerOrTheRange(long inside, long host) =>
        Assert.That(Map.ToHostUid(inside), Is.EqualTo(host));

    [TestCase(65537L)]
    [TestCase(-1L)]
    [TestCase(4294967294L)]
    public void UidsOutsideTheMapHaveNoHostId(long inside) =>
        Assert.That(Map.ToHostUid(inside), Is.Null);

    [Test]
    public void GidsUseTheirOwnRangeAndTheCallersGid()
    {
        Assert.That(Map.ToHostGid(0), Is.EqualTo(1002));
        Assert.That(Map.ToHostGid(1), Is.EqualTo(200000));
        Assert.That(Map.ToHostGid(1000), Is.EqualTo(200999));
        Assert.That(Map.ToHostGid(1001), Is.Null, "the gid range has 1000 ids");
        Assert.That(Map.MaxUid, Is.EqualTo(65536));
        Assert.That(Map.MaxGid, Is.EqualTo(1000));
    }

    [Test]
    public void CoversNeedsBothIds()
    {
        Assert.That(Map.Covers(1000, 1000), Is.True);
        Assert.That(Map.Covers(0, 0), Is.True);
        Assert.That(Map.Covers(1000, 1001), Is.False);
        Assert.That(Map.Covers(70000, 0), Is.False);
    }

    [Test]
    public void OfAPlanIsItsSubordinateRangesOrNothing()
    {
        var subuid = new IdMapPlan(IdMapKind.SubordinateRange, 1001, 1002, new IdRange(100000, 65536), new IdRange(200000, 1000), "/usr/bin/newuidmap", "/usr/bin/newgidmap");
        Assert.That(IdMapping.Of(subuid), Is.EqualTo(Map), "equal by value: the helper paths do not matter");
        Assert.That(IdMapping.Of(new IdMapPlan(IdMapKind.SingleId, 1001, 1002)), Is.Null);
    }

    [Test]
    public void KeyNamesTheMapExactly()
    {
        Assert.That(Map.Key, Is.EqualTo("u0=1001,1-65536=100000;g0=1002,1-1000=200000"));
        Assert.That((Map with { Uids = new IdRange(100001, 65536) }).Key, Is.Not.EqualTo(Map.Key));
        Assert.That((Map with { HostGid = 1001 }).Key, Is.Not.EqualTo(Map.Key));
        Assert.That(Map.Describe(), Is.EqualTo("uids 0→1001, 1-65536→100000-165535; gids 0→1002, 1-1000→200000-200999"));
    }
}

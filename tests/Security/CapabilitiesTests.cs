using Sandbox.Security;

namespace Sandbox.Tests.Security;

public sealed class CapabilitiesTests
{
    [Test]
    public void Default_IsDockersSet() =>
        Assert.That(Capabilities.Resolve([], []), Is.EqualTo(0xa80425fbUL));

    [Test]
    public void DropAllThenAdd_KeepsOnlyTheAdded() =>
        Assert.That(Capabilities.Resolve(["NET_ADMIN"], ["ALL"]), Is.EqualTo(1UL << 12));

    [Test]
    public void NamesAcceptTheCapPrefixAndAnyCase()
    {
        Assert.That(Capabilities.Parse("CAP_SYS_ADMIN"), Is.EqualTo(21));
        Assert.That(Capabilities.Parse("sys_ptrace"), Is.EqualTo(19));
    }

    [Test]
    public void DroppingADefault_RemovesIt() =>
        Assert.That(Capabilities.Resolve([], ["CHOWN"]) & 1UL, Is.EqualTo(0UL));

    [Test]
    public void UnknownName_IsAnInvalidSpec()
    {
        var e = Assert.Throws<SandboxException>(() => Capabilities.Resolve(["FOO"], []));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }
}

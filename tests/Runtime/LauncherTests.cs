using Sandbox.Runtime;

namespace Sandbox.Tests.Runtime;

public class LauncherTests
{
    // CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
    // CLONE_NEWCGROUP (0x02000000) is deliberately not a clone flag: PID 1 unshares its cgroup
    // namespace itself (UnshareCgroupNamespaceStep) once the parent has placed it in its cgroup.
    private const ulong AllCloneFlags = 0x7C020000UL;

    [Test]
    public void CloneFlags_All()
    {
        Assert.That(Launcher.CloneFlags(NamespaceSet.All), Is.EqualTo(AllCloneFlags));
    }

    [Test]
    public void CloneFlags_All_LeavesTheCgroupNamespaceToTheSetupSteps()
    {
        Assert.That(Launcher.CloneFlags(NamespaceSet.All) & 0x02000000UL, Is.EqualTo(0UL));
        Assert.That(Launcher.CloneFlags(NamespaceSet.Cgroup), Is.EqualTo(0UL));
    }

    [TestCase(NamespaceSet.None, 0UL)]
    [TestCase(NamespaceSet.User, 0x10000000UL)]
    [TestCase(NamespaceSet.Mount, 0x00020000UL)]
    [TestCase(NamespaceSet.Pid, 0x20000000UL)]
    [TestCase(NamespaceSet.Network, 0x40000000UL)]
    [TestCase(NamespaceSet.Uts, 0x04000000UL)]
    [TestCase(NamespaceSet.Ipc, 0x08000000UL)]
    public void CloneFlags_Each(NamespaceSet ns, ulong flags)
    {
        Assert.That(Launcher.CloneFlags(ns), Is.EqualTo(flags));
    }

    [Test]
    public void CloneFlags_AllButNetwork()
    {
        Assert.That(Launcher.CloneFlags(NamespaceSet.All & ~NamespaceSet.Network), Is.EqualTo(AllCloneFlags & ~0x40000000UL));
    }
}

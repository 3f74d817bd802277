using Sandbox.Identity;

namespace Sandbox.Tests.Identity;

public sealed class UserResolverTests
{
    private static readonly Dictionary<string, string> s_files = new()
    {
        ["/etc/passwd"] = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1654:1655:app:/home/app:/bin/sh\n",
        ["/etc/group"] = "root:x:0:\nstaff:x:50:\napp:x:1655:\n",
    };

    private static SandboxUser Resolve(string user) => UserResolver.Resolve(user, p => s_files.GetValueOrDefault(p));

    [Test]
    public void NameGivesUidPrimaryGroupAndHome() =>
        Assert.That(Resolve("app"), Is.EqualTo(new SandboxUser(1654, 1655, "/home/app")));

    [Test]
    public void NameAndGroupName() =>
        Assert.That(Resolve("app:staff"), Is.EqualTo(new SandboxUser(1654, 50, "/home/app")));

    [Test]
    public void NumericUidWithoutEntryGetsGroupZero() =>
        Assert.That(Resolve("4242"), Is.EqualTo(new SandboxUser(4242, 0, null)));

    [Test]
    public void NumericUidOfAnEntryGetsItsGroupAndHome() =>
        Assert.That(Resolve("1654"), Is.EqualTo(new SandboxUser(1654, 1655, "/home/app")));

    [TestCase("nosuch")]
    [TestCase("app:nosuchgroup")]
    [TestCase(":50")]
    public void UnknownNamesAreInvalid(string user)
    {
        var e = Assert.Throws<SandboxException>(() => Resolve(user));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
    }
}

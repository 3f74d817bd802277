using Sandbox.Identity;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Identity;

public class HostUserNameTests
{
    private const string Passwd =
        "root:x:0:0:root:/root:/bin/bash\n" +
        "# carol:x:1000:1000::/home/carol:/bin/sh\n" +
        "\n" +
        "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n" +
        "alice2:x:1000:1000::/home/alice2:/bin/bash\n" +
        "bob:x:1001:1001::/home/bob:/bin/sh\n";

    private TempDirectory _dir = null!;
    private int _nssCalls;

    [SetUp]
    public void SetUp()
    {
        _dir = new TempDirectory();
        _nssCalls = 0;
    }

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string Nss()
    {
        _nssCalls++;
        return "from-nss";
    }

    private string Lookup(uint uid, string? nsswitch, string? passwd = Passwd) => HostUserName.Of(uid, Nss,
        nsswitch is null ? _dir.Combine("no-nsswitch.conf") : _dir.CreateFile("nsswitch.conf", nsswitch),
        passwd is null ? _dir.Combine("no-passwd") : _dir.CreateFile("passwd", passwd));

    [TestCase("passwd:         files systemd\n")]
    [TestCase("passwd: files\n")]
    [TestCase("  passwd:files [NOTFOUND=return] ldap\n")]
    [TestCase("passwd:\tfiles[NOTFOUND=return] sss\n")]
    [TestCase("passwd: files\r\ngroup: files\r\n")]
    [TestCase("passwd: sss\npasswd: files # a later line replaces an earlier one\n")]
    [TestCase("# passwd: ldap\ngroup: ldap\npasswd: files\n")]
    public void FilesFirst_TakesTheFirstEntryWithTheUidFromPasswd(string nsswitch)
    {
        Assert.That(Lookup(1000, nsswitch), Is.EqualTo("alice"));
        Assert.That(Lookup(1001, nsswitch), Is.EqualTo("bob"));
        Assert.That(_nssCalls, Is.Zero);
    }

    [TestCase("passwd: systemd files\n")]
    [TestCase("passwd: compat\n")]
    [TestCase("passwd: sss files\n")]
    [TestCase("passwd: files\npasswd: ldap\n")]
    [TestCase("passwd: filesystem\n")]
    [TestCase("passwd:\n")]
    [TestCase("group: files\nshadow: files\n")]
    [TestCase("#passwd: files\n")]
    [TestCase("passwdx: files\n")]
    [TestCase("")]
    [TestCase(null)]
    public void AnotherFirstSourceOrNoPasswdLine_AsksNss(string? nsswitch)
    {
        Assert.That(Lookup(1000, nsswitch), Is.EqualTo("from-nss"));
        Assert.That(_nssCalls, Is.EqualTo(1));
    }

    [Test]
    public void ANonAsciiNameAndALeadingZeroUid()
    {
        const string passwd = "eve:x:01000:1000::/home/eve:/bin/sh\njörg:x:1000:1000::/home/jorg:/bin/sh\n";
        Assert.That(Lookup(1000, "passwd: files\n", passwd), Is.EqualTo("eve"), "01000 is uid 1000 to glibc's strtoul too");
        Assert.That(Lookup(1000, "passwd: files\n", "jörg:x:1000:1000::/home/jorg:/bin/sh\n"), Is.EqualTo("jörg"));
        Assert.That(_nssCalls, Is.Zero);
    }

    [Test]
    public void AUidWithoutAnEntry_AsksNss()
    {
        Assert.That(Lookup(4242, "passwd: files\n"), Is.EqualTo("from-nss"));
        Assert.That(Lookup(1000, "passwd: files\n", passwd: null), Is.EqualTo("from-nss"));
        Assert.That(_nssCalls, Is.EqualTo(2));
    }

    [TestCase("+@admins::::::\nalice:x:1000:1000::/home/alice:/bin/sh\n")]
    [TestCase("-bob:x:1001:1001::/home/bob:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")]
    [TestCase("alice:x:1000:1000:/home/alice:/bin/sh\n")]
    [TestCase("eve:x: 1000:1000::/home/eve:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")]
    [TestCase("eve:x:0x3e8:1000::/home/eve:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")]
    [TestCase(":x:1000:1000::/home/eve:/bin/sh\n")]
    public void EntriesOnlyNssInterpretsSafely_AskNss(string passwd)
    {
        Assert.That(Lookup(1000, "passwd: files\n", passwd), Is.EqualTo("from-nss"));
        Assert.That(_nssCalls, Is.EqualTo(1));
    }

    [Test]
    public void ThisHost_AgreesWithNss()
    {
        // The real files of the machine the tests run on: whichever way the name is found, it is
        // the one getpwuid_r gives.
        uint uid = Sandbox.Linux.Syscalls.RealUserId;
        Assert.That(HostUserName.Of(uid, static () => Environment.UserName), Is.EqualTo(Environment.UserName));
    }
}

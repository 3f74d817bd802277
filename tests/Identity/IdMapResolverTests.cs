using Sandbox.Identity;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Identity;

public class IdMapResolverTests
{
    private TempDirectory _dir = null!;

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown() => _dir.Dispose();

    private string SubFile(string content) => _dir.CreateFile("sub-" + Guid.NewGuid().ToString("N"), content);

    [Test]
    public void FindRange_MatchesTheUserName()
    {
        string file = SubFile("bob:300000:65536\nalice:100000:65536\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(100000, 65536)));
    }

    [Test]
    public void FindRange_MatchesTheNumericUid()
    {
        string file = SubFile("bob:300000:65536\n1000:200000:4096\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(200000, 4096)));
    }

    [Test]
    public void FindRange_TakesTheFirstMatch()
    {
        string file = SubFile("alice:100000:1000\nalice:500000:65536\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(100000, 1000)));
    }

    [Test]
    public void FindRange_SkipsCommentsBlankAndMalformedLines()
    {
        string file = SubFile(
            "# alice:1:2\n" +
            "\n" +
            "   \n" +
            "alice:notanumber:65536\n" +
            "alice:100000\n" +
            "alice:100000:0\n" +
            "alice:-5:10\n" +
            "  alice:700000:65536  \n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(700000, 65536)));
    }

    [Test]
    public void FindRange_ReadsFieldsAsDigitsOnly()
    {
        string file = SubFile(
            "alice: 100000:65536\n" +
            "alice:99999999999999999999:65536\n" +
            "alice:+5:10\n" +
            "alice:0300000:0065536\r\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(300000, 65536)));
    }

    [Test]
    public void FindRange_MatchesTheUidAsText()
    {
        // newuidmap compares the owner with strcmp (shadow's find_range): it would refuse this range.
        string file = SubFile("01000:200000:4096\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.Null);
    }

    [Test]
    public void FindRange_MatchesANonAsciiName()
    {
        string file = SubFile("jorg:1:1\njörg:100000:65536\n");
        Assert.That(IdMapResolver.FindRange(file, "jörg", 1000), Is.EqualTo(new IdRange(100000, 65536)));
    }

    [Test]
    public void FindRange_CapsTheCountAt65536()
    {
        string file = SubFile("alice:100000:1000000\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.EqualTo(new IdRange(100000, 65536)));
    }

    [Test]
    public void FindRange_NoEntryForTheUser_Null()
    {
        string file = SubFile("bob:100000:65536\n1001:200000:65536\nalicea:1:1\n");
        Assert.That(IdMapResolver.FindRange(file, "alice", 1000), Is.Null);
    }

    [Test]
    public void FindRange_MissingFile_Null()
    {
        Assert.That(IdMapResolver.FindRange(_dir.Combine("nope"), "alice", 1000), Is.Null);
        Assert.That(IdMapResolver.FindRange(_dir.Combine("no-dir", "subuid"), "alice", 1000), Is.Null);
    }

    private IdentityEnvironment Env(string? subuid = null, string? subgid = null, string? searchPath = null) => new(
        1000,
        1001,
        "alice",
        SubUidFile: subuid ?? _dir.Combine("missing-subuid"),
        SubGidFile: subgid ?? _dir.Combine("missing-subgid"),
        SearchPath: searchPath ?? _dir.CreateDirectory("empty-bin"));

    private string FakeIdTools()
    {
        string bin = _dir.CreateDirectory("idtools");
        _dir.CreateFile("idtools/newuidmap");
        _dir.CreateFile("idtools/newgidmap");
        return bin;
    }

    [Test]
    public void Single_IsAlwaysSingleId_EvenWithARange()
    {
        var env = Env(SubFile("alice:100000:65536\n"), SubFile("alice:100000:65536\n"), FakeIdTools());
        Assert.That(IdMapResolver.Resolve(UserNamespaceMode.Single, env), Is.EqualTo(new IdMapPlan(IdMapKind.SingleId, 1000, 1001)));
    }

    [Test]
    public void Auto_WithARangeAndTools_UsesTheSubordinateRange()
    {
        string bin = FakeIdTools();
        var env = Env(SubFile("alice:100000:65536\n"), SubFile("alice:200000:70000\n"), bin);
        var plan = IdMapResolver.Resolve(UserNamespaceMode.Auto, env);
        Assert.That(plan, Is.EqualTo(new IdMapPlan(
            IdMapKind.SubordinateRange,
            1000,
            1001,
            new IdRange(100000, 65536),
            new IdRange(200000, 65536),
            System.IO.Path.Combine(bin, "newuidmap"),
            System.IO.Path.Combine(bin, "newgidmap"))));
    }

    [Test]
    public void Subuid_WithARange_UsesTheSubordinateRange()
    {
        var env = Env(SubFile("1000:100000:65536\n"), SubFile("1000:100000:65536\n"), FakeIdTools());
        Assert.That(IdMapResolver.Resolve(UserNamespaceMode.Subuid, env).Kind, Is.EqualTo(IdMapKind.SubordinateRange));
    }

    [Test]
    public void Auto_WithoutASubuidRange_FallsBackToSingleId()
    {
        var env = Env(SubFile("bob:100000:65536\n"), SubFile("alice:100000:65536\n"), FakeIdTools());
        Assert.That(IdMapResolver.Resolve(UserNamespaceMode.Auto, env), Is.EqualTo(new IdMapPlan(IdMapKind.SingleId, 1000, 1001)));
    }

    [Test]
    public void Auto_WithMissingFiles_FallsBackToSingleId()
    {
        Assert.That(IdMapResolver.Resolve(UserNamespaceMode.Auto, Env()), Is.EqualTo(new IdMapPlan(IdMapKind.SingleId, 1000, 1001)));
    }

    [Test]
    public void Subuid_WithAMissingRange_ThrowsIdMappingFailedNamingTheFix()
    {
        string subuid = SubFile("bob:100000:65536\n");
        var env = Env(subuid, SubFile("alice:100000:65536\n"), FakeIdTools());
        var e = Assert.Throws<SandboxException>(() => IdMapResolver.Resolve(UserNamespaceMode.Subuid, env));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.IdMappingFailed));
        Assert.That(e.Message, Does.StartWith("--userns=subuid: "));
        Assert.That(e.Message, Does.Contain(subuid + " has no range for alice"));
        Assert.That(e.Message, Does.Contain("usermod --add-subuids"));
        Assert.That(e.ExitCode, Is.EqualTo(125));
    }

    [Test]
    public void Subuid_WithAMissingGidRange_NamesTheSubgidFile()
    {
        string subgid = SubFile("bob:100000:65536\n");
        var env = Env(SubFile("alice:100000:65536\n"), subgid, FakeIdTools());
        var e = Assert.Throws<SandboxException>(() => IdMapResolver.Resolve(UserNamespaceMode.Subuid, env));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.IdMappingFailed));
        Assert.That(e.Message, Does.Contain(subgid + " has no range for alice").And.Contain("--add-subgids"));
    }

    [Test]
    public void TryResolveSubordinate_ReturnsNullReasonWithAPlan()
    {
        var env = Env(SubFile("alice:100000:65536\n"), SubFile("alice:100000:65536\n"), FakeIdTools());
        string? why = IdMapResolver.TryResolveSubordinate(env, out IdMapPlan? plan);
        Assert.That(why, Is.Null);
        Assert.That(plan, Is.Not.Null);
        Assert.That(plan!.Kind, Is.EqualTo(IdMapKind.SubordinateRange));
    }
}

namespace Sandbox.Tests.Core;

public class BindMountParseTests
{
    [TestCase("/a:/b", "/a", "/b", false)]
    [TestCase("/a:/b:ro", "/a", "/b", true)]
    [TestCase("/a:/b:rw", "/a", "/b", false)]
    [TestCase("rel/dir:/work", "rel/dir", "/work", false)]
    [TestCase("/host/file.txt:/etc/file.txt:ro", "/host/file.txt", "/etc/file.txt", true)]
    public void Parse_Valid(string value, string host, string sandbox, bool readOnly)
    {
        Assert.That(BindMount.Parse(value), Is.EqualTo(new BindMount(host, sandbox, readOnly)));
    }

    [TestCase("/a", "expected HOST:CONTAINER[:ro]")]
    [TestCase("/a:b", "the path in the sandbox must be absolute")]
    [TestCase("/a:/b:xx", "the mode must be ro or rw, not 'xx'")]
    [TestCase("/a:/b:RO", "the mode must be ro or rw")]
    [TestCase(":/b", "expected HOST:CONTAINER[:ro]")]
    [TestCase("/a:", "expected HOST:CONTAINER[:ro]")]
    [TestCase("/a:/b:ro:x", "expected HOST:CONTAINER[:ro]")]
    [TestCase("", "expected HOST:CONTAINER[:ro]")]
    public void Parse_Invalid(string value, string message)
    {
        var e = Assert.Throws<SandboxException>(() => BindMount.Parse(value));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain(message));
        Assert.That(e.Message, Does.Contain($"'{value}'"));
    }

    [Test]
    public void SpecWithBind_AppendsInOrder()
    {
        var spec = new SandboxSpec(["true"]).WithBind(new BindMount("/a", "/b")).WithBind(new BindMount("/c", "/d", true));
        Assert.That(spec.Binds, Is.EqualTo(new[] { new BindMount("/a", "/b"), new BindMount("/c", "/d", true) }));
    }

    [Test]
    public void SpecDefaults()
    {
        var spec = new SandboxSpec(["true"]);
        Assert.That(spec.Root, Is.EqualTo(RootSpec.Host));
        Assert.That(spec.Hostname, Is.EqualTo("sandbox"));
        Assert.That(spec.Network, Is.EqualTo(NetworkMode.None));
        Assert.That(spec.UserNamespace, Is.EqualTo(UserNamespaceMode.Auto));
        Assert.That(spec.Timeout, Is.Null);
        Assert.That(spec.ForwardStdin, Is.False);
        Assert.That(spec.Environment, Is.Empty);
    }
}

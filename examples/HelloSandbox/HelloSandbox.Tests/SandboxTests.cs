using System.Net.Sockets;

namespace HelloSandbox.Tests;

/// <summary>
/// What the tests see from inside the sandbox that ci/demo runs them in. ci/demo passes
/// SANDBOX_DEMO_INSIDE=1 into the sandbox; anywhere else (a plain `dotnet test` on the host) these
/// are ignored, so the sample still passes there.
/// </summary>
public class SandboxTests
{
    // Created by ci/demo on the host before the run; the sandbox has its own /tmp.
    private const string HostMarker = "/tmp/sandbox-demo-host-marker";

    [SetUp]
    public void OnlyInsideTheSandbox()
    {
        if (Environment.GetEnvironmentVariable("SANDBOX_DEMO_INSIDE") != "1")
            Assert.Ignore("not inside the sandbox (SANDBOX_DEMO_INSIDE is not 1): run ci/demo");
    }

    [Test]
    public void HostTmpIsNotVisible() =>
        Assert.That(File.Exists(HostMarker), Is.False, $"{HostMarker} (made on the host) is visible");

    [Test]
    public async Task OutsideNetworkIsUnreachable()
    {
        using var client = new TcpClient();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        Exception? failure = null;
        try
        {
            await client.ConnectAsync("1.1.1.1", 53, timeout.Token);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            failure = e;
        }
        Assert.That(failure, Is.Not.Null, "connected to 1.1.1.1:53 from inside the sandbox");
        TestContext.Out.WriteLine($"connect to 1.1.1.1:53 failed as expected: {failure!.Message}");
    }

    [Test]
    public void WorkspaceIsWritable()
    {
        string path = Path.Combine(TestContext.CurrentContext.TestDirectory, $"sandbox-demo-probe-{Environment.ProcessId}");
        File.WriteAllText(path, "written inside the sandbox");
        try
        {
            Assert.That(File.ReadAllText(path), Is.EqualTo("written inside the sandbox"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestCase("/usr/sandbox-demo-probe")]
    [TestCase("/etc/sandbox-demo-probe")]
    public void OutsideTheWorkspaceIsReadOnly(string path) =>
        Assert.That(() => File.WriteAllText(path, "should not be written"),
            Throws.InstanceOf<IOException>().Or.InstanceOf<UnauthorizedAccessException>(),
            $"{path} is writable from inside the sandbox");

    [Test]
    public void HostSecretIsNotInTheEnvironment() =>
        Assert.That(Environment.GetEnvironmentVariable("SANDBOX_DEMO_SECRET"), Is.Null,
            "SANDBOX_DEMO_SECRET (exported on the host) leaked into the sandbox");
}

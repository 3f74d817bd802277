namespace Sandbox.IntegrationTests;

/// <summary>The security switches a user can turn: seccomp profiles in Docker's format, unconfined, capabilities.</summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class SecurityOptionsTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    [Test]
    public void ADockerProfileIsCompiledAndEnforced()
    {
        using var dir = new TempDir();
        string profile = ProfileRefusing(dir, "mkdir", "mkdirat");
        CliResult r = SandboxCli.Sh("mkdir /tmp/x 2>&1; echo rc=$?", "--security-opt", $"seccomp={profile}");
        Assert.That(r.StdoutText, Does.Contain("Operation not permitted").And.Contain("rc=1"), r.ToString());
        CliResult plain = SandboxCli.Sh("mkdir /tmp/x && echo made");
        Assert.That(plain.StdoutText.Trim(), Is.EqualTo("made"), "without the profile mkdir works: the test can tell");
    }

    /// <summary>
    /// The payload reads sandbox-init's go byte under its filter (it sets itself up while PID 1 execs
    /// sandbox-init): a profile that refuses read(2) ends the run with an error that says so, not
    /// with a silent exit code.
    /// </summary>
    [Test]
    public void AProfileThatRefusesReadIsReportedAsSuch()
    {
        using var dir = new TempDir();
        string profile = ProfileRefusing(dir, "read");
        CliResult r = SandboxCli.Run("run", "--security-opt", $"seccomp={profile}", "--", "/bin/true");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain("a profile must allow read"), r.ToString());
    }

    [Test]
    public void UnconfinedTurnsTheFilterOffAndTheDefaultIsOn()
    {
        CliResult filtered = SandboxCli.Sh("grep '^Seccomp:' /proc/self/status");
        CliResult unconfined = SandboxCli.Sh("grep '^Seccomp:' /proc/self/status", "--security-opt", "seccomp=unconfined");
        Assert.That(filtered.StdoutText.Trim(), Is.EqualTo("Seccomp:\t2"));
        Assert.That(unconfined.StdoutText.Trim(), Is.EqualTo("Seccomp:\t0"));
    }

    [Test]
    public void CapabilitiesFollowDockersDefaultsAndFlags()
    {
        Assert.That(SandboxCli.Sh("grep CapBnd /proc/self/status").StdoutText.Trim(), Is.EqualTo("CapBnd:\t00000000a80425fb"));
        Assert.That(SandboxCli.Sh("grep CapBnd /proc/self/status", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN").StdoutText.Trim(), Is.EqualTo("CapBnd:\t0000000000001000"));
        CliResult bad = SandboxCli.Sh("true", "--cap-add", "NOT_A_CAP");
        Assert.That(bad.ExitCode, Is.EqualTo(125));
        Assert.That(bad.Stderr, Does.Contain("unknown capability"));
    }

    /// <summary>A profile in Docker's format in <paramref name="dir"/> that allows everything but <paramref name="names"/> (EPERM).</summary>
    private static string ProfileRefusing(TempDir dir, params string[] names)
    {
        string profile = Path.Combine(dir.Path, "profile.json");
        string list = string.Join(", ", names.Select(n => $"\"{n}\""));
        File.WriteAllText(profile, $$"""
            {
              "defaultAction": "SCMP_ACT_ALLOW",
              "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
              "syscalls": [ { "names": [{{list}}], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 } ]
            }
            """);
        return profile;
    }
}

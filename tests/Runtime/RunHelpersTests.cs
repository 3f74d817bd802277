using NUnit.Framework;
using Sandbox.Linux;

namespace Sandbox.Tests.Runtime;

/// <summary>The id-map helpers are run by posix_spawnp in the native executor: statuses, stderr, failures to start.</summary>
public class RunHelpersTests
{
    [Test]
    public void RunsSideBySideAndReportsEachStatusAndStderr()
    {
        var results = NativeExecutor.RunHelpers(
        [
            ("sh", ["-c", "echo oops >&2; exit 3"]),
            ("/bin/sh", ["-c", "sleep 0.2; echo second >&2"]),
        ]);
        Assert.That(ExitStatus.FromWaitStatus(results[0].Status), Is.EqualTo(ExitStatus.Exited(3)));
        Assert.That(results[0].Stderr, Is.EqualTo("oops\n"));
        Assert.That(ExitStatus.FromWaitStatus(results[1].Status), Is.EqualTo(ExitStatus.Exited(0)));
        Assert.That(results[1].Stderr, Is.EqualTo("second\n"));
    }

    [Test]
    public void AHelperThatCannotStartGivesMinusErrno()
    {
        var results = NativeExecutor.RunHelpers([("/nonexistent/newuidmap", ["1"]), ("no-such-helper-on-path", [])]);
        Assert.That(results[0].Status, Is.EqualTo(-2), "ENOENT");
        Assert.That(results[1].Status, Is.EqualTo(-2), "ENOENT through the PATH search");
    }

    [Test]
    public void AChattyHelperDoesNotBlockAndItsStderrIsCut()
    {
        // 200 KiB of stderr: more than a pipe holds, so it must be read while the helper runs.
        var results = NativeExecutor.RunHelpers([("sh", ["-c", "head -c 204800 /dev/zero | tr '\\0' x >&2"])]);
        Assert.That(ExitStatus.FromWaitStatus(results[0].Status).Code, Is.EqualTo(0));
        Assert.That(results[0].Stderr, Has.Length.EqualTo(1023).And.Match("^x+$"));
    }

    [Test]
    public void TheHelperGetsNoOpenDescriptorsBeyondStdio()
    {
        var results = NativeExecutor.RunHelpers([("sh", ["-c", "ls /proc/self/fd >&2"])]);
        // 0, 1, 2 and the directory ls itself opened.
        Assert.That(results[0].Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.LessThanOrEqualTo(4), results[0].Stderr);
    }
}

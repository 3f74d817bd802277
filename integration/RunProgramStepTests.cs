using System.Diagnostics;
using Sandbox.Identity;
using Sandbox.Runtime;

namespace Sandbox.IntegrationTests;

/// <summary>
/// The executor's "run a program" set-up step (SBX_OP_RUN, how fuse-overlayfs is started) in real
/// sandboxes: it must wait for the program's exit and nothing else, capture the head of its stderr for
/// the error, give it exactly the environment it was given, and never hang on a chatty program or on a
/// daemon that keeps the stderr pipe.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class RunProgramStepTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    private static string? RunSh(string script, params string[] environment)
    {
        IdMapPlan maps = IdMapResolver.Resolve(UserNamespaceMode.Single, IdentityEnvironment.Current());
        return HelperSandbox.Run(maps, [new RunProgramStep("/bin/sh", ["sh", "-c", script], [.. environment])], HelperSandbox.TrueProgram, ["true"]);
    }

    [Test]
    public void ASuccessfulProgramLetsTheSetUpGoOnWhateverItSays()
    {
        Assert.That(RunSh("echo noise >&2; test \"$FOO\" = bar && test -z \"$HOME\"", "FOO=bar"), Is.Null);
    }

    [Test]
    public void AFailingProgramFailsTheSetUpWithItsStatusAndWhatItSaid()
    {
        string? failure = RunSh("echo 'fuse: device not found' >&2; echo 'second line' >&2; exit 3");
        Assert.That(failure, Is.EqualTo("setting up the sandbox failed at step 1 (run sh): /bin/sh exited with status 3: fuse: device not found second line"));
        Assert.That(RunSh("kill -TERM $$"), Does.EndWith("/bin/sh was killed by signal 15"));
        Assert.That(RunSh("exit 0", "X=1"), Is.Null);
    }

    [Test]
    public void AProgramThatCannotBeRunIsNamed()
    {
        IdMapPlan maps = IdMapResolver.Resolve(UserNamespaceMode.Single, IdentityEnvironment.Current());
        string? failure = HelperSandbox.Run(maps, [new RunProgramStep("/no/such/program", ["x"], [])], HelperSandbox.TrueProgram, ["true"]);
        Assert.That(failure, Does.Contain("/no/such/program exited with status 127"));
    }

    [Test]
    public void ALongStderrNeitherBlocksTheProgramNorOverflowsTheMessage()
    {
        var sw = Stopwatch.StartNew();
        string? failure = RunSh("i=0; while [ $i -lt 4000 ]; do echo \"line $i of a long complaint that fills the pipe\" >&2; i=$((i+1)); done; exit 1");
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)));
        Assert.That(failure, Does.StartWith("setting up the sandbox failed at step 1 (run sh): /bin/sh exited with status 1: line 0 of a long"));
        Assert.That(failure!.Length, Is.LessThan(2300), "the head of stderr, not all of it");
    }

    [Test]
    public void ADaemonThatKeepsStderrOpenDoesNotHoldTheSetUpAndDiesWithTheSandbox()
    {
        var sw = Stopwatch.StartNew();
        // The background sleep keeps the stderr pipe open (as a daemon that never redirects it would).
        Assert.That(RunSh("sleep 300 & echo started >&2; exit 0"), Is.Null);
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)), "the step waits for the exit, not for EOF");
        Assert.That(HostProcesses.WaitUntil(() => !SleepOf300Running(), TimeSpan.FromSeconds(5)), Is.True, "the daemon outlived its sandbox");
    }

    private static bool SleepOf300Running() =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Any(pid =>
        {
            try
            {
                return File.ReadAllText($"/proc/{pid}/cmdline") == "sleep\0300\0" && new FileInfo($"/proc/{pid}").Exists;
            }
            catch (IOException)
            {
                return false;
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        });
}

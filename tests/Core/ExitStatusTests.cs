namespace Sandbox.Tests.Core;

public class ExitStatusTests
{
    [TestCase(0x0000, 0)]
    [TestCase(0x0700, 7)]
    [TestCase(0xFF00, 255)]
    [TestCase(0x0100, 1)]
    public void FromWaitStatus_Exited(int status, int code)
    {
        var s = ExitStatus.FromWaitStatus(status);
        Assert.That(s, Is.EqualTo(ExitStatus.Exited(code)));
        Assert.That(s.Code, Is.EqualTo(code));
        Assert.That(s.Signal, Is.Null);
        Assert.That(s.ShellExitCode, Is.EqualTo(code));
    }

    [TestCase(9, 9, 137)]
    [TestCase(15, 15, 143)]
    [TestCase(0x80 | 11, 11, 139)] // core dumped flag
    [TestCase(2, 2, 130)]
    public void FromWaitStatus_Killed(int status, int signal, int shellCode)
    {
        var s = ExitStatus.FromWaitStatus(status);
        Assert.That(s, Is.EqualTo(ExitStatus.Killed(signal)));
        Assert.That(s.Code, Is.Null);
        Assert.That(s.Signal, Is.EqualTo(signal));
        Assert.That(s.ShellExitCode, Is.EqualTo(shellCode));
    }

    [Test]
    public void ToString_NamesCodeOrSignal()
    {
        Assert.That(ExitStatus.Exited(3).ToString(), Is.EqualTo("exit code 3"));
        Assert.That(ExitStatus.Killed(9).ToString(), Is.EqualTo("signal 9 (SIGKILL)"));
        Assert.That(ExitStatus.Killed(15).ToString(), Is.EqualTo("signal 15 (SIGTERM)"));
    }

    [TestCase(1, "SIGHUP")]
    [TestCase(9, "SIGKILL")]
    [TestCase(11, "SIGSEGV")]
    [TestCase(31, "SIGSYS")]
    [TestCase(34, "SIGRT34")]
    public void SignalNames_Name(int signal, string name)
    {
        Assert.That(SignalNames.Name(signal), Is.EqualTo(name));
    }

    private static SandboxResult Result(ExitStatus status, TerminationReason reason, TimeSpan? timeout = null) =>
        new(status, reason, TimeSpan.FromSeconds(2), TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(200), timeout);

    [Test]
    public void Result_ExitCode_IsThePayloadsCode()
    {
        Assert.That(Result(ExitStatus.Exited(3), TerminationReason.Exited).ExitCode, Is.EqualTo(3));
        Assert.That(Result(ExitStatus.Killed(9), TerminationReason.Exited).ExitCode, Is.EqualTo(137));
    }

    [Test]
    public void Result_TimedOut_Is124RegardlessOfStatus()
    {
        var r = Result(ExitStatus.Killed(9), TerminationReason.TimedOut, TimeSpan.FromSeconds(1.5));
        Assert.That(r.ExitCode, Is.EqualTo(124));
        Assert.That(r.Message, Is.EqualTo("timed out after 1.5s: the sandbox and every process in it were killed"));
    }

    [Test]
    public void Result_TimedOutUnderASecond_FormatsMilliseconds()
    {
        var r = Result(ExitStatus.Killed(9), TerminationReason.TimedOut, TimeSpan.FromMilliseconds(250));
        Assert.That(r.Message, Is.EqualTo("timed out after 250ms: the sandbox and every process in it were killed"));
    }

    [Test]
    public void Result_Cancelled_KeepsTheSignalCodeAndExplains()
    {
        var r = Result(ExitStatus.Killed(9), TerminationReason.Cancelled);
        Assert.That(r.ExitCode, Is.EqualTo(137));
        Assert.That(r.Message, Does.StartWith("cancelled"));
    }

    [Test]
    public void Result_Exited_HasNoMessageAndSumsCpu()
    {
        var r = Result(ExitStatus.Exited(0), TerminationReason.Exited);
        Assert.That(r.Message, Is.Null);
        Assert.That(r.CpuTime, Is.EqualTo(TimeSpan.FromMilliseconds(500)));
    }
}

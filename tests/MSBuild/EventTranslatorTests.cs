using System.Text;
using Microsoft.Build.Framework;
using Sandbox.MSBuild;

namespace Sandbox.Tests.MSBuild;

public class EventTranslatorTests
{
    private FakeBuildEngine _engine = null!;
    private EventTranslator _translator = null!;
    private SandboxExec _task = null!;

    [SetUp]
    public void SetUp()
    {
        _engine = new FakeBuildEngine();
        _task = new SandboxExec { BuildEngine = _engine };
        _translator = new EventTranslator(_task.Log, "test", _ => false);
    }

    private void Feed(string jsonLines)
    {
        foreach (string line in jsonLines.Split('\n'))
            _translator.HandleEventLine(Encoding.UTF8.GetBytes(line));
    }

    // `sandbox test --events json` on an NUnit project with one passing and one failing test (recorded).
    private const string FailingRun = """
        {"event":"note","message":"restoring /src/P (network on)"}
        {"event":"started","pid":3678,"time":"2026-11-26T19:28:02.3878122+00:00"}
        {"event":"output","stream":"stdout","text":"  Determining projects to restore...\n"}
        {"event":"output","stream":"stdout","text":"  Restored /src/P/P.csproj (in 401 ms).\n"}
        {"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1807.37,"userCpuMs":1309.917,"systemCpuMs":400.463}
        {"event":"note","message":"testing /src/P (network off, workspace /src/P writable)"}
        {"event":"started","pid":3720,"time":"2026-11-26T19:28:04.1612674+00:00"}
        {"event":"output","stream":"stdout","text":"  P -\u003E /src/P/bin/Debug/net10.0/P.dll\n"}
        {"event":"output","stream":"stdout","text":"Test run for /src/P/bin/Debug/net10.0/P.dll (.NETCoreApp,Version=v10.0)\n"}
        {"event":"output","stream":"stdout","text":"A total of 1 test files matched the specified pattern.\n"}
        {"event":"output","stream":"stdout","text":"  Failed Fails [135 ms]\n"}
        {"event":"output","stream":"stdout","text":"  Error Message:\n"}
        {"event":"output","stream":"stdout","text":"     arithmetic\nAssert.That(1 \u002B 1, Is.EqualTo(3))\n  Expected: 3\n  But was:  2\n\n  Stack Trace:\n     at P.Tests.Fails() in /src/P/Tests.cs:line 11\n\n1)    at P.Tests.Fails() in /src/P/Tests.cs:line 11\n\n\n"}
        {"event":"output","stream":"stdout","text":"\n"}
        {"event":"output","stream":"stdout","text":"Failed!  - Failed:     1, Passed:     1, Skipped:     0, Total:     2, Duration: 148 ms - P.dll (net10.0)\n"}
        {"event":"exited","exitCode":1,"code":1,"reason":"exited","wallMs":6417.34,"userCpuMs":3178.667,"systemCpuMs":814.196,"cgroup":"v2","peakMemoryBytes":268435456,"oomKilled":false,"oomKills":0,"pidsLimitHits":0}
        {"event":"summary","seen":true,"passed":1,"failed":1,"skipped":0,"durationMs":8291,"message":"1 passed, 1 failed, 0 skipped in 8.3s"}
        """;

    [Test]
    public void Failing_test_run_logs_one_error_at_the_test_and_the_summary()
    {
        Feed(FailingRun);
        _translator.Complete(1, cancelled: false);

        Assert.That(_engine.Errors, Has.Count.EqualTo(1), _engine.ToString());
        BuildErrorEventArgs error = _engine.Errors[0];
        Assert.That(error.Code, Is.EqualTo("TESTERROR"));
        Assert.That(error.File, Is.EqualTo("/src/P/Tests.cs"));
        Assert.That(error.LineNumber, Is.EqualTo(11));
        Assert.That(error.Message, Does.StartWith("Fails failed: arithmetic"));
        Assert.That(_engine.Warnings, Is.Empty);

        var high = _engine.MessagesOf(MessageImportance.High).ToList();
        Assert.That(high, Does.Contain("sandbox test: 1 passed, 1 failed, 0 skipped in 8.3s"));
        Assert.That(high.Any(m => m.StartsWith("Failed!  - Failed:     1", StringComparison.Ordinal)));
        Assert.That((_translator.Passed, _translator.Failed, _translator.Skipped), Is.EqualTo((1, 1, 0)));

        var normal = _engine.MessagesOf(MessageImportance.Normal).ToList();
        Assert.That(normal, Does.Contain("sandbox: restoring /src/P (network on)"));
        Assert.That(normal, Does.Contain("  P -> /src/P/bin/Debug/net10.0/P.dll"));
        Assert.That(normal, Does.Contain("sandbox: exited 1 after 6.4s, peak memory 256 MiB"));
        Assert.That(normal.Where(m => m.Trim().Length == 0), Is.Empty, "blank lines are not logged");
    }

    [Test]
    public void Output_is_logged_in_order_as_it_arrives()
    {
        Feed(FailingRun);
        _translator.Complete(1, cancelled: false);
        List<string> log = _engine.Log;
        int restore = log.IndexOf("normal: sandbox: restoring /src/P (network on)");
        int built = log.IndexOf("normal:   P -> /src/P/bin/Debug/net10.0/P.dll");
        int error = log.FindIndex(l => l.StartsWith("error TESTERROR", StringComparison.Ordinal));
        int summary = log.IndexOf("high: sandbox test: 1 passed, 1 failed, 0 skipped in 8.3s");
        Assert.That(new[] { restore, built, error, summary }, Is.Ordered.And.All.GreaterThanOrEqualTo(0), _engine.ToString());
    }

    [Test]
    public void Compiler_errors_are_canonical_and_reported_once()
    {
        Feed("""
            {"event":"started","pid":1,"time":"2026-11-26T19:42:25.284111+00:00"}
            {"event":"output","stream":"stdout","text":"/src/C/Tests.cs(9,38): error CS1002: ; expected [/src/C/C.csproj]\n/src/C/Tests.cs(8,13): warning CS0219: The variable 'unused' is assigned but its value is never used [/src/C/C.csproj]\n"}
            {"event":"output","stream":"stdout","text":"\nBuild FAILED.\n\n/src/C/Tests.cs(9,38): error CS1002: ; expected [/src/C/C.csproj]\n"}
            {"event":"exited","exitCode":1,"code":1,"reason":"exited","wallMs":2046.881,"userCpuMs":1029.696,"systemCpuMs":194.8}
            {"event":"summary","seen":false,"passed":0,"failed":0,"skipped":0,"durationMs":2096,"message":"no test summary seen in 2.1s"}
            """);
        _translator.Complete(1, cancelled: false);
        Assert.That(_engine.Errors, Has.Count.EqualTo(1), _engine.ToString());
        Assert.That((_engine.Errors[0].Code, _engine.Errors[0].File, _engine.Errors[0].LineNumber, _engine.Errors[0].ColumnNumber),
            Is.EqualTo(("CS1002", "/src/C/Tests.cs", 9, 38)));
        Assert.That(_engine.Warnings.Single().Code, Is.EqualTo("CS0219"));
        Assert.That(_translator.Passed, Is.Null);
    }

    [Test]
    public void Lines_split_across_chunks_and_streams_are_reassembled()
    {
        // "é" (C3 A9) split between two base64 chunks; stderr interleaved; the last line unterminated.
        string part1 = Convert.ToBase64String(new byte[] { (byte)'c', (byte)'a', (byte)'f', 0xC3 });
        string part2 = Convert.ToBase64String(new byte[] { 0xA9, (byte)'\n' });
        Feed($$"""
            {"event":"output","stream":"stdout","text":"/src/A.cs(1,"}
            {"event":"output","stream":"stderr","text":"warn"}
            {"event":"output","stream":"stdout","text":"2): error CS1002: ; expected\npartial "}
            {"event":"output","stream":"stderr","base64":"{{part1}}"}
            {"event":"output","stream":"stderr","base64":"{{part2}}"}
            {"event":"output","stream":"stdout","text":"line"}
            {"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}
            """);
        Assert.That(_engine.Errors.Single().LineNumber, Is.EqualTo(1));
        Assert.That(_engine.Errors.Single().ColumnNumber, Is.EqualTo(2));
        var normal = _engine.MessagesOf(MessageImportance.Normal).ToList();
        Assert.That(normal, Does.Contain("warncafé"));
        Assert.That(normal, Does.Contain("partial line"));
    }

    [Test]
    public void Error_event_becomes_an_error_with_its_own_code()
    {
        Feed("""{"event":"error","code":"SBX005","exitCode":127,"message":"nonexist: command not found in the sandbox's PATH"}""");
        _translator.Complete(127, cancelled: false);
        Assert.That(_engine.Errors, Has.Count.EqualTo(1));
        Assert.That(_engine.Errors[0].Code, Is.EqualTo("SBX005"));
        Assert.That(_engine.Errors[0].Message, Is.EqualTo("nonexist: command not found in the sandbox's PATH"));
    }

    [Test]
    public void Timeout_is_SBX124()
    {
        Feed("""{"event":"exited","exitCode":124,"signal":9,"signalName":"SIGKILL","reason":"timeout","wallMs":1005.029,"userCpuMs":0.746,"systemCpuMs":0,"message":"timed out after 1s: the sandbox and every process in it were killed"}""");
        _translator.Complete(124, cancelled: false);
        Assert.That(_engine.Errors.Single().Code, Is.EqualTo(EventTranslator.TimeoutCode));
        Assert.That(_engine.Errors.Single().Message, Does.StartWith("timed out after 1s"));
        Assert.That(_translator.TimedOut, Is.True);
    }

    [Test]
    public void Oom_kill_is_SBX137_and_pids_limit_hits_a_warning()
    {
        Feed("""{"event":"exited","exitCode":137,"signal":9,"signalName":"SIGKILL","reason":"exited","wallMs":10,"userCpuMs":1,"systemCpuMs":1,"cgroup":"v2","peakMemoryBytes":67108864,"oomKilled":true,"oomKills":1,"pidsLimitHits":3,"message":"killed by the OOM killer (memory limit 64 MiB)"}""");
        _translator.Complete(137, cancelled: false);
        Assert.That(_engine.Errors.Single().Code, Is.EqualTo(EventTranslator.OutOfMemoryCode));
        Assert.That(_engine.Errors.Single().Message, Is.EqualTo("killed by the OOM killer (memory limit 64 MiB)"));
        Assert.That(_engine.Warnings.Single().Code, Is.EqualTo(EventTranslator.PidsLimitCode));
        Assert.That(_engine.Warnings.Single().Message, Does.Contain("3 time(s)"));
    }

    [Test]
    public void Unexplained_failure_is_SBX101_with_the_last_lines()
    {
        Feed("""
            {"event":"output","stream":"stderr","text":"make: *** [all] Error 2\n"}
            {"event":"exited","exitCode":2,"code":2,"reason":"exited","wallMs":10,"userCpuMs":1,"systemCpuMs":1}
            """);
        _translator.Complete(2, cancelled: false);
        var error = _engine.Errors.Single();
        Assert.That(error.Code, Is.EqualTo(EventTranslator.CommandFailedCode));
        Assert.That(error.Message, Does.Contain("exit code 2").And.Contain("make: *** [all] Error 2"));
    }

    [Test]
    public void Killed_by_a_signal_is_named()
    {
        Feed("""{"event":"exited","exitCode":143,"signal":15,"signalName":"SIGTERM","reason":"exited","wallMs":10,"userCpuMs":1,"systemCpuMs":1}""");
        _translator.Complete(143, cancelled: false);
        Assert.That(_engine.Errors.Single().Message, Does.Contain("killed by SIGTERM"));
    }

    [Test]
    public void No_events_at_all_is_SBX102_with_the_CLIs_stderr()
    {
        _translator.HandleCliStderrLine("Unrecognized command or argument '--bogus'.");
        _translator.Complete(1, cancelled: false);
        var error = _engine.Errors.Single();
        Assert.That(error.Code, Is.EqualTo(EventTranslator.ProtocolCode));
        Assert.That(error.Message, Does.Contain("--bogus"));
    }

    [Test]
    public void Exit_zero_without_a_run_is_SBX102_not_a_green_build()
    {
        // SandboxCliPath=/bin/true: exit 0, nothing printed; no tests ran.
        _translator.Complete(0, cancelled: false);
        var error = _engine.Errors.Single();
        Assert.That(error.Code, Is.EqualTo(EventTranslator.ProtocolCode));
        Assert.That(error.Message, Does.StartWith("sandbox test exited 0 but reported no run (it printed no events): is SandboxCliPath the sandbox CLI?"));
    }

    [Test]
    public void A_diagnostic_like_line_printed_by_a_test_is_a_message_not_an_error()
    {
        // An analyzer test prints the diagnostic it checks for; the run passes.
        Feed("""
            {"event":"output","stream":"stdout","text":"/src/P/Lib.cs(3,9): warning CS0168: from the build\n"}
            {"event":"output","stream":"stdout","text":"Test run for /src/P/bin/Debug/net10.0/P.dll (.NETCoreApp,Version=v10.0)\n"}
            {"event":"output","stream":"stdout","text":"Input.cs(3,9): error CS0103: The name 'x' does not exist in the current context\n"}
            {"event":"output","stream":"stdout","text":"Passed!  - Failed:     0, Passed:     1, Skipped:     0, Total:     1, Duration: 1 ms - P.dll (net10.0)\n"}
            {"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}
            {"event":"summary","seen":true,"passed":1,"failed":0,"skipped":0,"durationMs":1,"message":"1 passed, 0 failed, 0 skipped in 0.0s"}
            """);
        _translator.Complete(0, cancelled: false);
        Assert.That(_engine.Errors, Is.Empty);
        Assert.That(_engine.Warnings.Select(w => w.Code), Is.EqualTo(new[] { "CS0168" }), "the build's own diagnostics still count");
        Assert.That(_engine.MessagesOf(MessageImportance.Normal), Has.Some.Contains("Input.cs(3,9): error CS0103"));
    }

    [Test]
    public void No_test_summary_is_warning_SBX103()
    {
        Feed("""
            {"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}
            {"event":"summary","seen":false,"message":"no test summary seen in 7.5s"}
            """);
        _translator.Complete(0, cancelled: false);
        Assert.That(_engine.Errors, Is.Empty);
        Assert.That(_engine.Warnings.Single().Code, Is.EqualTo(EventTranslator.NoTestsCode));
    }

    [Test]
    public void Success_logs_no_error_and_cancellation_no_error_either()
    {
        Feed("""{"event":"exited","exitCode":0,"code":0,"reason":"exited","wallMs":1,"userCpuMs":0,"systemCpuMs":0}""");
        _translator.Complete(0, cancelled: false);
        Assert.That(_engine.Errors, Is.Empty);

        var engine = new FakeBuildEngine();
        var translator = new EventTranslator(new SandboxExec { BuildEngine = engine }.Log, "test");
        translator.HandleEventLine("""{"event":"exited","exitCode":143,"signal":15,"signalName":"SIGTERM","reason":"cancelled","wallMs":1,"userCpuMs":0,"systemCpuMs":0}"""u8);
        translator.Complete(143, cancelled: true);
        Assert.That(engine.Errors, Is.Empty);
        Assert.That(engine.MessagesOf(MessageImportance.High).Single(), Does.StartWith("sandbox: cancelled"));
    }

    [Test]
    public void Lines_that_are_not_json_are_shown_as_they_are_and_braces_are_not_format_items()
    {
        Feed("""
            not json {0} at all
            {"event":"output","stream":"stdout","text":"value {0} {1}\n"}
            {"event":"note","message":"braces {x}"}
            """);
        var normal = _engine.MessagesOf(MessageImportance.Normal).ToList();
        Assert.That(normal, Is.EqualTo(new[] { "not json {0} at all", "value {0} {1}", "sandbox: braces {x}" }));
    }
}

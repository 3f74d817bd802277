using System.Text;
using System.Text.Json;

namespace Sandbox.Cli;

/// <summary>Turns a sandbox's events into what the user sees.</summary>
internal interface IEventRenderer : IDisposable
{
    void Render(SandboxEvent e);

    /// <summary>The sandbox could not run the command.</summary>
    void RenderFailure(SandboxException e);

    /// <summary>A progress note of ours (not the payload's).</summary>
    void Note(string text);

    /// <summary>The closing line of `sandbox test`.</summary>
    void RenderSummary(TestSummary summary, TimeSpan duration, SandboxResult? result);

    /// <summary>Where the payload's output may go directly instead of as output events; null: as events.</summary>
    DirectOutput? DirectOutput => null;
}

internal static class SummaryText
{
    public static string Format(TestSummary s, TimeSpan duration, SandboxResult? result)
    {
        string counts = s.Seen ? $"{s.Passed} passed, {s.Failed} failed, {s.Skipped} skipped" : "no test summary seen";
        string peak = result?.Usage?.PeakMemoryBytes is long p ? $", peak memory {Cgroups.Sizes.Format(p)}" : "";
        return $"{counts} in {duration.TotalSeconds:0.0}s{peak}";
    }
}

/// <summary>The payload's bytes, unchanged, on our stdout and stderr; our own messages on stderr, prefixed.</summary>
internal sealed class ConsoleRenderer(bool stats = false) : IEventRenderer
{
    private readonly Stream _stdout = StandardDescriptors.Open(1);
    private readonly Stream _stderr = StandardDescriptors.Open(2);

    // Our own stdout and stderr, when open: the payload's bytes are spliced there unchanged.
    public DirectOutput? DirectOutput { get; } = DirectOutput.StandardStreams();

    public void Render(SandboxEvent e)
    {
        switch (e)
        {
            case OutputEvent o:
                Stream target = o.Stream == OutputStream.Stdout ? _stdout : _stderr;
                target.Write(o.Data.Span);
                target.Flush();
                break;
            case ExitedEvent { Result: var result }:
                if (result.Message is string message)
                    Message(message);
                if (stats)
                    Message(result.StatsLine());
                break;
        }
    }

    public void RenderFailure(SandboxException e) => Message(e.Message);

    public void Note(string text) => Message(text);

    public void RenderSummary(TestSummary summary, TimeSpan duration, SandboxResult? result) =>
        Message("test: " + SummaryText.Format(summary, duration, result));

    // Best effort (StandardDescriptors.TellError says why): the exit status carries the outcome.
    private void Message(string text)
    {
        try
        {
            _stderr.Write(Encoding.UTF8.GetBytes($"sandbox: {text}\n"));
        }
        catch (IOException)
        {
        }
    }

    public void Dispose()
    {
        _stdout.Dispose();
        _stderr.Dispose();
    }
}

/// <summary>JSON lines, one event each, for machines (the MSBuild task reads these). Written by hand: no reflection, NativeAOT-safe.</summary>
internal sealed class JsonLinesRenderer : IEventRenderer
{
    private readonly Stream _stdout = StandardDescriptors.Open(1);
    private readonly Utf8JsonWriter _writer;

    public JsonLinesRenderer()
    {
        _writer = new Utf8JsonWriter(_stdout, new JsonWriterOptions { Indented = false, SkipValidation = false });
    }

    public void Render(SandboxEvent e)
    {
        _writer.Reset();
        _writer.WriteStartObject();
        switch (e)
        {
            case StartedEvent s:
                _writer.WriteString("event", "started");
                _writer.WriteNumber("pid", s.ProcessId);
                _writer.WriteString("time", s.StartTime);
                break;
            case OutputEvent o:
                _writer.WriteString("event", "output");
                _writer.WriteString("stream", o.Stream == OutputStream.Stdout ? "stdout" : "stderr");
                if (IsUtf8(o.Data.Span))
                    _writer.WriteString("text", o.Data.Span);
                else
                    _writer.WriteBase64String("base64", o.Data.Span);
                break;
            case ExitedEvent { Result: var r }:
                _writer.WriteString("event", "exited");
                _writer.WriteNumber("exitCode", r.ExitCode);
                if (r.Status.Code is int code)
                    _writer.WriteNumber("code", code);
                if (r.Status.Signal is int signal)
                {
                    _writer.WriteNumber("signal", signal);
                    _writer.WriteString("signalName", SignalNames.Name(signal));
                }
                _writer.WriteString("reason", r.Reason switch
                {
                    TerminationReason.TimedOut => "timeout",
                    TerminationReason.Cancelled => "cancelled",
                    _ => "exited",
                });
                _writer.WriteNumber("wallMs", Math.Round(r.WallTime.TotalMilliseconds, 3));
                _writer.WriteNumber("userCpuMs", Math.Round(r.UserCpuTime.TotalMilliseconds, 3));
                _writer.WriteNumber("systemCpuMs", Math.Round(r.SystemCpuTime.TotalMilliseconds, 3));
                if (r.Usage is { } usage)
                {
                    _writer.WriteString("cgroup", usage.CgroupVersion);
                    if (usage.PeakMemoryBytes is long peak)
                        _writer.WriteNumber("peakMemoryBytes", peak);
                    if (usage.CpuTime is TimeSpan cpu)
                        _writer.WriteNumber("cgroupCpuMs", Math.Round(cpu.TotalMilliseconds, 3));
                    _writer.WriteBoolean("oomKilled", r.OutOfMemory);
                    _writer.WriteNumber("oomKills", usage.OomKills);
                    _writer.WriteNumber("pidsLimitHits", usage.PidsLimitHits);
                }
                if (r.Message is string message)
                    _writer.WriteString("message", message);
                break;
        }
        _writer.WriteEndObject();
        _writer.Flush();
        _stdout.WriteByte((byte)'\n');
        _stdout.Flush();
    }

    public void RenderFailure(SandboxException e)
    {
        try
        {
            WriteFailure(e);
        }
        catch (IOException)
        {
            // stdout itself failed (often the very failure reported): stderr then, best effort.
            StandardDescriptors.TellError($"sandbox: {e.Code.Format()} {e.Message}");
        }
    }

    private void WriteFailure(SandboxException e)
    {
        _writer.Reset();
        _writer.WriteStartObject();
        _writer.WriteString("event", "error");
        _writer.WriteString("code", e.Code.Format());
        _writer.WriteNumber("exitCode", e.ExitCode);
        _writer.WriteString("message", e.Message);
        _writer.WriteEndObject();
        _writer.Flush();
        _stdout.WriteByte((byte)'\n');
        _stdout.Flush();
    }

    public void Note(string text)
    {
        _writer.Reset();
        _writer.WriteStartObject();
        _writer.WriteString("event", "note");
        _writer.WriteString("message", text);
        _writer.WriteEndObject();
        _writer.Flush();
        _stdout.WriteByte((byte)'\n');
        _stdout.Flush();
    }

    public void RenderSummary(TestSummary summary, TimeSpan duration, SandboxResult? result)
    {
        _writer.Reset();
        _writer.WriteStartObject();
        _writer.WriteString("event", "summary");
        _writer.WriteBoolean("seen", summary.Seen);
        _writer.WriteNumber("passed", summary.Passed);
        _writer.WriteNumber("failed", summary.Failed);
        _writer.WriteNumber("skipped", summary.Skipped);
        _writer.WriteNumber("durationMs", Math.Round(duration.TotalMilliseconds));
        if (result?.Usage?.PeakMemoryBytes is long peak)
            _writer.WriteNumber("peakMemoryBytes", peak);
        _writer.WriteString("message", SummaryText.Format(summary, duration, result));
        _writer.WriteEndObject();
        _writer.Flush();
        _stdout.WriteByte((byte)'\n');
        _stdout.Flush();
    }

    private static bool IsUtf8(ReadOnlySpan<byte> data) => System.Text.Unicode.Utf8.IsValid(data);

    public void Dispose()
    {
        _writer.Dispose();
        _stdout.Dispose();
    }
}

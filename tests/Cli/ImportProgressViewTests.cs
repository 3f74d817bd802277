using System.Diagnostics;
using Sandbox.Cli;
using Sandbox.Images;

namespace Sandbox.Tests.Cli;

/// <summary>The import's progress display, fed the reports ImageStore.Import makes.</summary>
public class ImportProgressViewTests
{
    private static readonly ImportProgress[] s_reports =
    [
        new(ImportStage.Reading, "reading busybox[1].tar"),
        new(ImportStage.LayerReused, "layer 1/2 1111aaaa: already in the store") { LayerIndex = 1, LayerCount = 2, BytesDone = 1_000_000, BytesTotal = 4_000_000 },
        new(ImportStage.Unpacking, "layer 2/2 2222bbbb") { LayerIndex = 2, LayerCount = 2, BytesDone = 2_000_000, BytesTotal = 4_000_000 },
        new(ImportStage.Warning, "layer 2/2 2222bbbb: skipped 1 device node(s)"),
        new(ImportStage.Unpacking, "layer 2/2 2222bbbb") { LayerIndex = 2, LayerCount = 2, BytesDone = 4_000_000, BytesTotal = 4_000_000 },
        new(ImportStage.Done, "imported busybox:latest (abcdef, 2 layers)"),
    ];

    /// <summary>A clock the test moves: one second per report unless told otherwise.</summary>
    private sealed class Clock
    {
        public long Now;
        public void Advance(double seconds) => Now += (long)(seconds * Stopwatch.Frequency);
    }

    /// <summary>What the terminal shows after each frame: the text after the last line clear.</summary>
    private static string[] Frames(string output) =>
        output.Split(ProgressLine.ClearLine).Where(f => f.Length > 0).ToArray();

    [Test]
    public void OnATerminalItDrawsTheBarWithPercentageSizeAndSpeedAndClearsIt()
    {
        var terminal = new StringWriter();
        var clock = new Clock();
        using (var line = new ProgressLine(terminal, 120, () => clock.Now))
        {
            foreach (ImportProgress report in s_reports)
            {
                clock.Advance(1);
                line.Report(report);
            }
        }
        string output = terminal.ToString();
        string[] frames = Frames(output);

        Assert.That(frames[0], Is.EqualTo("reading busybox[1].tar"), "no size known yet: the description only");
        string halfWay = frames.First(f => f.StartsWith("layer 2/2 2222bbbb ", StringComparison.Ordinal) && f.Contains("50%"));
        // 2 MB of 4 MB read in the 3 s since the view started.
        Assert.That(halfWay, Does.Contain("━━━━━━━━━━──────────").And.Contain(" 50% 2.0 MB / 4.0 MB 666.7 kB/s"), halfWay);
        var barColumns = frames.Where(f => f.Contains('─') || f.Contains('━')).Select(f => f.IndexOfAny(['─', '━'])).Distinct();
        Assert.That(barColumns, Is.EqualTo(new[] { 119 - 36 - 1 - 20 }), "the bar keeps its column, left of the widest figures");
        Assert.That(output, Does.Contain(ProgressLine.ClearLine + "sandbox: warning: layer 2/2 2222bbbb: skipped 1 device node(s)" + Environment.NewLine),
            "a warning clears the line and stays above it");
        Assert.That(frames.Last(f => !f.StartsWith("sandbox: warning", StringComparison.Ordinal)),
            Does.StartWith("imported busybox:latest (abcdef, 2 layers)").And.Contain("100% 4.0 MB / 4.0 MB"));
        Assert.That(output, Does.EndWith(ProgressLine.ClearLine), "the line is cleared at the end");
    }

    [Test]
    public void ReportsInQuickSuccessionAreDrawnTenTimesASecondAtMost()
    {
        var terminal = new StringWriter();
        var clock = new Clock();
        using var line = new ProgressLine(terminal, 100, () => clock.Now);
        for (int i = 1; i <= 1000; i++)
        {
            clock.Advance(0.001); // a report per millisecond: one second in all
            line.Report(new ImportProgress(ImportStage.Unpacking, "layer 1/1 1111aaaa") { BytesDone = i, BytesTotal = 1000 });
        }
        int frames = Frames(terminal.ToString()).Length;
        Assert.That(frames, Is.InRange(10, 11), "the first report, then one every 100 ms");
    }

    [Test]
    public void TheLineNeverWrapsOnANarrowTerminal()
    {
        string description = "layer 12/12 0123456789abcdef: a very long description of what is being read";
        foreach (int width in new[] { 120, 80, 60, 40, 20, 5, 1 })
        {
            string line = ProgressLine.Render(description, 1_500_000, 3_000_000, 2, width);
            Assert.That(line.Length, Is.LessThanOrEqualTo(Math.Max(width - 1, 1)), $"width {width}: '{line}'");
            if (width >= 80)
                Assert.That(line, Does.Contain("━").And.Contain("…").And.EndWith(" 50% 1.5 MB / 3.0 MB 750 kB/s"), $"width {width}");
            else if (width >= 40)
                Assert.That(line, Does.Not.Contain("━").And.EndWith(" 50% 1.5 MB / 3.0 MB 750 kB/s"), $"width {width}: the bar goes before the figures do");
        }
        Assert.That(ProgressLine.Render("short", 0, 0, 0, 80), Is.EqualTo("short"));
        Assert.That(ProgressLine.Render("short", 0, 10, 0, 80), Does.EndWith("  0% 0 B / 10 B ?/s"), "no speed before any time has passed");
    }

    [Test]
    public void MessagesAreShownAsTheyAre()
    {
        var terminal = new StringWriter();
        ImportProgressView.Run(interactive: true, progress =>
        {
            progress.Report(new ImportProgress(ImportStage.Reading, "reading [red]x[/].tar"));
            progress.Report(new ImportProgress(ImportStage.Done, "imported {0} [bold]"));
            return 0;
        }, terminal, width: 80);
        Assert.That(Frames(terminal.ToString()), Is.EqualTo(new[] { "reading [red]x[/].tar", "imported {0} [bold]" }));
    }

    [Test]
    public void OffATerminalNothingButWarningsIsPrinted()
    {
        var terminal = new StringWriter();
        var warnings = new StringWriter();
        ImportProgressView.Run(interactive: false, progress =>
        {
            foreach (ImportProgress report in s_reports.Where(r => r.Stage != ImportStage.Warning))
                progress.Report(report);
            return 0;
        }, terminal, warnings);
        Assert.That(warnings.ToString(), Is.Empty);
        Assert.That(terminal.ToString(), Is.Empty);

        ImportProgressView.Run(interactive: false, progress =>
        {
            progress.Report(s_reports[3]);
            return 0;
        }, terminal, warnings);
        Assert.That(warnings.ToString(), Is.EqualTo("sandbox: warning: layer 2/2 2222bbbb: skipped 1 device node(s)" + Environment.NewLine));
        Assert.That(terminal.ToString(), Is.Empty);
    }
}

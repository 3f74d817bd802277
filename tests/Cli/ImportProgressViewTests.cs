using Sandbox.Cli;
using Sandbox.Images;
using Spectre.Console;
using Spectre.Console.Testing;

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

    [Test]
    public void OnATerminalItDrawsTheBarWithPercentageSizeAndSpeedAndClearsIt()
    {
        var console = new TestConsole().Interactive().Width(120);
        string halfWay = "";
        string result = ImportProgressView.Run(interactive: true, progress =>
        {
            foreach (ImportProgress report in s_reports.Take(3))
                progress.Report(report);
            // The live display redraws on its own timer (every 100 ms): wait for the frame at 2 of 4 MB.
            var until = DateTime.UtcNow.AddSeconds(10);
            while (!console.Output.Contains("50%", StringComparison.Ordinal) && DateTime.UtcNow < until)
                Thread.Sleep(20);
            halfWay = console.Output;
            foreach (ImportProgress report in s_reports.Skip(3))
                progress.Report(report);
            return "record";
        }, console);

        Assert.That(result, Is.EqualTo("record"));
        Assert.That(halfWay, Does.Contain("layer 2/2 2222bbbb").And.Contain("━").And.Contain("50%").And.Contain("1.9/3.8 MiB"), halfWay);
        Assert.That(halfWay, Does.Match(@"(\d+(\.\d+)? [KMG]?i?B/s|\?/s)"), "a transfer speed column");
        string output = console.Output;
        Assert.That(output, Does.Contain("sandbox: warning: layer 2/2 2222bbbb: skipped 1 device node(s)"));
        // The last frame: the final description, 100 %, the total size.
        Assert.That(output, Does.Contain("imported busybox:latest (abcdef, 2 layers)").And.Contain("100%").And.Contain("3.8 MiB"));
    }

    [Test]
    public void MarkupInMessagesIsShownAsText()
    {
        var console = new TestConsole().Interactive().Width(120);
        Assert.DoesNotThrow(() => ImportProgressView.Run(interactive: true, progress =>
        {
            progress.Report(new ImportProgress(ImportStage.Reading, "reading [red]x[/].tar"));
            progress.Report(new ImportProgress(ImportStage.Done, "imported [bold]"));
            return 0;
        }, console));
        Assert.That(console.Output, Does.Contain("imported [bold]"));
    }

    [Test]
    public void OffATerminalNothingButWarningsIsPrinted()
    {
        var console = new TestConsole();
        var warnings = new StringWriter();
        ImportProgressView.Run(interactive: false, progress =>
        {
            foreach (ImportProgress report in s_reports.Where(r => r.Stage != ImportStage.Warning))
                progress.Report(report);
            return 0;
        }, console, warnings);
        Assert.That(warnings.ToString(), Is.Empty);
        Assert.That(console.Output, Is.Empty);

        ImportProgressView.Run(interactive: false, progress =>
        {
            progress.Report(s_reports[3]);
            return 0;
        }, console, warnings);
        Assert.That(warnings.ToString(), Is.EqualTo("sandbox: warning: layer 2/2 2222bbbb: skipped 1 device node(s)" + Environment.NewLine));
        Assert.That(console.Output, Is.Empty);
    }
}

using System.Text;
using Sandbox.Cli;

namespace Sandbox.Tests.Cli;

public sealed class TestSummaryTests
{
    private static TestSummary Feed(params string[] chunks)
    {
        var summary = new TestSummary();
        foreach (string chunk in chunks)
            summary.Feed(Encoding.UTF8.GetBytes(chunk));
        return summary;
    }

    [Test]
    public void VsTestMinimalLines_AreSummedAcrossAssemblies()
    {
        var s = Feed(
            "Passed!  - Failed:     0, Passed:     5, Skipped:     1, Total:     6, Duration: 40 ms - A.dll (net10.0)\n",
            "Failed!  - Failed:     2, Passed:     3, Skipped:     0, Total:     5, Duration: 1 s - B.dll (net10.0)\n");
        Assert.That((s.Passed, s.Failed, s.Skipped, s.Assemblies), Is.EqualTo((8, 2, 1, 2)));
    }

    [Test]
    public void VsTestNormalVerbosityBlock_IsRead()
    {
        var s = Feed("  Passed AddsNumbers [10 ms]\n", "Test Run Failed.\nTotal tests: 11\n     Passed: 9\n     Failed: 1\n    Skipped: 1\n Total time: 2.5 Seconds\n");
        Assert.That((s.Passed, s.Failed, s.Skipped, s.Seen), Is.EqualTo((9, 1, 1, true)));
    }

    [Test]
    public void TestNamesThatLookLikeCounts_OutsideTheSummary_AreIgnored()
    {
        var s = Feed("  Passed: 3\n", "Failed: 7\n");
        Assert.That(s.Seen, Is.False);
        Assert.That(s.Passed + s.Failed, Is.EqualTo(0));
    }

    [Test]
    public void MicrosoftTestingPlatformSummary_IsRead()
    {
        var s = Feed("Test run summary: \u001b[32mPassed!\u001b[0m - bin/Debug/net10.0/T.dll (net10.0|x64)\n  total: 6\n  failed: 0\n  succeeded: 5\n  skipped: 1\n  duration: 1s 20ms\n");
        Assert.That((s.Passed, s.Failed, s.Skipped, s.Assemblies), Is.EqualTo((5, 0, 1, 1)));
    }

    [Test]
    public void LinesSplitAcrossChunks_AreJoined()
    {
        var s = Feed("Passed!  - Failed:     0, Pas", "sed:     4, Skipped:     0, Total:     4, Duration: 1 ms - A.dll\n");
        Assert.That(s.Passed, Is.EqualTo(4));
    }
}

using Microsoft.Build.Framework;
using Sandbox.MSBuild;

namespace Sandbox.Tests.MSBuild;

public class OutputRecognizerTests
{
    private static List<LogEntry> Feed(string text, Func<string, bool>? fileExists = null)
    {
        var recognizer = new OutputRecognizer(fileExists ?? (_ => false));
        var entries = new List<LogEntry>();
        foreach (string line in text.Split('\n'))
            recognizer.Feed(line, entries);
        recognizer.Flush(entries);
        return entries;
    }

    private static List<DiagnosticEntry> Diagnostics(List<LogEntry> entries) => entries.OfType<DiagnosticEntry>().ToList();

    [TestCase("/src/A/Program.cs(10,5): error CS1002: ; expected [/src/A/A.csproj]", false, "CS1002", "/src/A/Program.cs", 10, 5, 0, 0, "; expected")]
    [TestCase("/src/A/Program.cs(10,5): warning CS0168: The variable 'e' is declared but never used [/src/A/A.csproj::TargetFramework=net10.0]", true, "CS0168", "/src/A/Program.cs", 10, 5, 0, 0, "The variable 'e' is declared but never used")]
    [TestCase("/src/A/A.fs(3,1,3,9): error FS0039: The value 'x' is not defined", false, "FS0039", "/src/A/A.fs", 3, 1, 3, 9, "The value 'x' is not defined")]
    [TestCase("/src/A/A.vb(7): error BC30451: 'y' is not declared.", false, "BC30451", "/src/A/A.vb", 7, 0, 0, 0, "'y' is not declared.")]
    [TestCase("/src/A/A.cs(7-9): error CS0001: range", false, "CS0001", "/src/A/A.cs", 7, 0, 9, 0, "range")]
    [TestCase("/src/A/A.cs(7,2-6): error CS0001: columns", false, "CS0001", "/src/A/A.cs", 7, 2, 0, 6, "columns")]
    [TestCase("/src/A/A.csproj : error NU1101: Unable to find package Nope. No packages exist with this id in source(s): nuget.org", false, "NU1101", "/src/A/A.csproj", 0, 0, 0, 0, "Unable to find package Nope. No packages exist with this id in source(s): nuget.org")]
    [TestCase("MSBUILD : error MSB1009: Project file does not exist.", false, "MSB1009", "MSBUILD", 0, 0, 0, 0, "Project file does not exist.")]
    [TestCase("  1>/src/A/A.cs(1,1): error CS0246: The type or namespace name 'Foo' could not be found", false, "CS0246", "/src/A/A.cs", 1, 1, 0, 0, "The type or namespace name 'Foo' could not be found")]
    [TestCase("/usr/share/dotnet/sdk/10.0.401/Microsoft.Common.targets(5,5): warning MSB3277: Found conflicts [/src/A/A.csproj]", true, "MSB3277", "/usr/share/dotnet/sdk/10.0.401/Microsoft.Common.targets", 5, 5, 0, 0, "Found conflicts")]
    [TestCase("/src/T/UnitTest1.cs(12): error TESTERROR: Fails (5ms): Expected 3", false, "TESTERROR", "/src/T/UnitTest1.cs", 12, 0, 0, 0, "Fails (5ms): Expected 3")]
    [TestCase("/src/A/A.cs(4,9): error xUnit1004: Test methods should not be skipped", false, "xUnit1004", "/src/A/A.cs", 4, 9, 0, 0, "Test methods should not be skipped")]
    public void Canonical_errors_and_warnings(string line, bool warning, string code, string file, int l, int c, int el, int ec, string text)
    {
        DiagnosticEntry? d = OutputRecognizer.ParseCanonical(line);
        Assert.That(d, Is.Not.Null);
        Assert.That(d!.IsWarning, Is.EqualTo(warning));
        Assert.That(d.Code, Is.EqualTo(code));
        Assert.That(d.File, Is.EqualTo(file));
        Assert.That((d.Line, d.Column, d.EndLine, d.EndColumn), Is.EqualTo((l, c, el, ec)));
        Assert.That(d.Message, Is.EqualTo(text));
    }

    [TestCase("/src/My (copy)/A.cs(10,5): error CS1002: ; expected [/src/My (copy)/A.csproj]", "/src/My (copy)/A.cs", 10, 5)]
    [TestCase("/src/v(2)/A.cs(3,1): warning CS0168: unused", "/src/v(2)/A.cs", 3, 1)]
    [TestCase("/src/App (1)/App.csproj : error NU1101: Unable to find package Nope.", "/src/App (1)/App.csproj", 0, 0)]
    public void Canonical_paths_may_hold_parentheses(string line, string file, int l, int c)
    {
        DiagnosticEntry? d = OutputRecognizer.ParseCanonical(line);
        Assert.That(d, Is.Not.Null);
        Assert.That((d!.File, d.Line, d.Column), Is.EqualTo((file, l, c)));
    }

    [TestCase("error: something went wrong")]
    [TestCase("Error: connection refused")]
    [TestCase("warning: deprecated")]
    [TestCase("  Determining projects to restore...")]
    [TestCase("some text with error in it")]
    [TestCase("Program.cs: error while reading: eof")]
    [TestCase("/src/A.cs(abc): error CS1002: bad location")]
    [TestCase("Assert.That(error, Is.Null): error CS1: nope")]
    public void Not_canonical(string line)
    {
        Assert.That(OutputRecognizer.ParseCanonical(line), Is.Null);
    }

    [Test]
    public void Canonical_line_in_output_becomes_a_diagnostic_not_a_message()
    {
        var entries = Feed("  P -> /src/P/bin/P.dll\n/src/P/T.cs(9,38): error CS1002: ; expected [/src/P/P.csproj]");
        Assert.That(entries[0], Is.EqualTo(new MessageEntry(MessageImportance.Normal, "  P -> /src/P/bin/P.dll")));
        Assert.That(entries[1], Is.InstanceOf<DiagnosticEntry>());
        Assert.That(entries, Has.Count.EqualTo(2));
    }

    // dotnet test (VSTest console logger), as printed inside the sandbox for an NUnit project.
    private const string VsTestOutput =
        "Test run for /src/P/bin/Debug/net10.0/P.dll (.NETCoreApp,Version=v10.0)\n" +
        "A total of 1 test files matched the specified pattern.\n" +
        "  Failed Fails [135 ms]\n" +
        "  Error Message:\n" +
        "     arithmetic\n" +
        "Assert.That(1 + 1, Is.EqualTo(3))\n" +
        "  Expected: 3\n" +
        "  But was:  2\n" +
        "\n" +
        "  Stack Trace:\n" +
        "     at P.Tests.Fails() in /src/P/Tests.cs:line 11\n" +
        "\n" +
        "1)    at P.Tests.Fails() in /src/P/Tests.cs:line 11\n" +
        "\n" +
        "\n" +
        "\n" +
        "Failed!  - Failed:     1, Passed:     1, Skipped:     0, Total:     2, Duration: 148 ms - P.dll (net10.0)";

    [Test]
    public void VsTest_failure_becomes_one_error_at_the_test_file_and_line()
    {
        var entries = Feed(VsTestOutput);
        var errors = Diagnostics(entries);
        Assert.That(errors, Has.Count.EqualTo(1));
        var e = errors[0];
        Assert.That(e.Code, Is.EqualTo(OutputRecognizer.TestErrorCode));
        Assert.That(e.IsWarning, Is.False);
        Assert.That(e.File, Is.EqualTo("/src/P/Tests.cs"));
        Assert.That(e.Line, Is.EqualTo(11));
        Assert.That(e.Message, Is.EqualTo("Fails failed: arithmetic Assert.That(1 + 1, Is.EqualTo(3)) Expected: 3 But was:  2"));
        Assert.That(e.Message, Does.Not.Contain("\n"), "one line, for CI annotations");
    }

    [Test]
    public void VsTest_failure_stack_and_summary_are_high_importance_the_rest_normal()
    {
        var entries = Feed(VsTestOutput);
        var high = entries.OfType<MessageEntry>().Where(m => m.Importance == MessageImportance.High).Select(m => m.Text).ToList();
        Assert.That(high, Has.Count.EqualTo(2));
        Assert.That(high[0], Is.EqualTo("  Stack Trace:\n    at P.Tests.Fails() in /src/P/Tests.cs:line 11"));
        Assert.That(high[1], Does.StartWith("Failed!  - Failed:     1, Passed:     1"));
        Assert.That(entries.OfType<MessageEntry>().Where(m => m.Importance == MessageImportance.Normal).Select(m => m.Text),
            Does.Contain("  Failed Fails [135 ms]").And.Contain("Assert.That(1 + 1, Is.EqualTo(3))"));
        // The error comes right after the block, before the lines that follow it.
        int error = entries.FindIndex(x => x is DiagnosticEntry);
        int after = entries.FindIndex(x => x is MessageEntry { Text: "1)    at P.Tests.Fails() in /src/P/Tests.cs:line 11" });
        Assert.That(error, Is.LessThan(after));
    }

    [Test]
    public void The_first_frame_whose_file_exists_wins_then_one_that_is_not_a_deterministic_path()
    {
        const string output =
            "  Failed Ns.T.M [3 ms]\n" +
            "  Error Message:\n" +
            "   Expected: True\n" +
            "  Stack Trace:\n" +
            "     at NUnit.Framework.Assert.That(Boolean condition) in /_/src/NUnitFramework/framework/Assert.cs:line 99\n" +
            "     at Ns.Helpers.Check() in /elsewhere/Helpers.cs:line 5\n" +
            "     at Ns.T.M() in /src/T.cs:line 42\n";
        var withFiles = Diagnostics(Feed(output, f => f == "/src/T.cs"));
        Assert.That((withFiles[0].File, withFiles[0].Line), Is.EqualTo(("/src/T.cs", 42)));
        var withoutFiles = Diagnostics(Feed(output, _ => false));
        Assert.That((withoutFiles[0].File, withoutFiles[0].Line), Is.EqualTo(("/elsewhere/Helpers.cs", 5)));
    }

    [Test]
    public void Several_failures_and_passed_lines_at_normal_verbosity()
    {
        const string output =
            "  Passed A [1 ms]\n" +
            "  Failed B [2 ms]\n" +
            "  Error Message:\n" +
            "   b is wrong\n" +
            "  Stack Trace:\n" +
            "     at T.B() in /src/T.cs:line 10\n" +
            "  Failed C [3 ms]\n" +
            "  Error Message:\n" +
            "   c is wrong\n" +
            "  Stack Trace:\n" +
            "     at T.C() in /src/T.cs:line 20\n" +
            "\n" +
            "  Standard Output Messages:\n" +
            " printed by C\n" +
            "  Skipped D [1 ms]\n";
        var errors = Diagnostics(Feed(output));
        Assert.That(errors.Select(e => (e.Line, e.Message)), Is.EqualTo(new[]
        {
            (10, "B failed: b is wrong"),
            (20, "C failed: c is wrong"),
        }));
    }

    [Test]
    public void Failure_without_stack_trace_has_no_file_and_ends_at_the_summary()
    {
        const string output =
            "  Failed Setup.Broken [1 ms]\n" +
            "  Error Message:\n" +
            "   OneTimeSetUp: boom\n" +
            "Failed!  - Failed:     1, Passed:     0, Skipped:     0, Total:     1, Duration: 1 ms - X.dll (net10.0)\n";
        var errors = Diagnostics(Feed(output));
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0].File, Is.Null);
        Assert.That(errors[0].Message, Is.EqualTo("Setup.Broken failed: OneTimeSetUp: boom"));
    }

    [Test]
    public void Long_messages_are_cut()
    {
        string output = "  Failed Big [1 ms]\n  Error Message:\n" + string.Join("\n", Enumerable.Range(0, 40).Select(i => $"   line {i}")) + "\n";
        var e = Diagnostics(Feed(output)).Single();
        Assert.That(e.Message, Does.EndWith("line 11…"));
        string wide = "  Failed Wide [1 ms]\n  Error Message:\n   " + new string('x', 5000) + "\n";
        Assert.That(Diagnostics(Feed(wide)).Single().Message, Has.Length.EqualTo(OutputRecognizer.MaxMessageLength));
    }

    [Test]
    public void A_canonical_error_inside_a_failure_message_is_part_of_the_failure()
    {
        const string output =
            "  Failed T.Compiles [1 ms]\n" +
            "  Error Message:\n" +
            "   Compilation failed: /tmp/gen.cs(1,1): error CS1002: ; expected\n" +
            "  Stack Trace:\n" +
            "     at T.Compiles() in /src/T.cs:line 7\n";
        var errors = Diagnostics(Feed(output));
        Assert.That(errors.Select(e => e.Code), Is.EqualTo(new[] { OutputRecognizer.TestErrorCode }));
    }

    // dotnet test with Microsoft.Testing.Platform (global.json "test": { "runner": "Microsoft.Testing.Platform" }), NUnit runner.
    private const string PlatformOutput =
        "Running tests from /src/M/bin/Debug/net10.0/M.dll (net10.0|x64)\n" +
        "failed Fails (112ms)\n" +
        "    arithmetic\n" +
        "Assert.That(1 + 1, Is.EqualTo(3))\n" +
        "  Expected: 3\n" +
        "  But was:  2\n" +
        "\n" +
        "  from /src/M/bin/Debug/net10.0/M.dll (net10.0|x64)\n" +
        "    arithmetic\n" +
        "  Assert.That(1 + 1, Is.EqualTo(3))\n" +
        "    Expected: 3\n" +
        "    But was:  2\n" +
        "  \n" +
        "    at M.Tests.Fails() in /src/M/Tests.cs:11\n" +
        "    \n" +
        "    1)    at M.Tests.Fails() in /src/M/Tests.cs:line 11\n" +
        "    \n" +
        "    \n" +
        "/src/M/bin/Debug/net10.0/M.dll (net10.0|x64) failed with 1 error(s) (620ms)\n" +
        "Exit code: 2\n" +
        "  Standard output: NUnit Adapter 5.2.0.0: Test execution started\n" +
        "\n" +
        "Test run summary: Failed!\n" +
        "  total: 2\n" +
        "  failed: 1\n" +
        "  succeeded: 1\n" +
        "  skipped: 0\n" +
        "  duration: 975ms\n" +
        "Test run completed with non-success exit code: 2 (see: https://aka.ms/testingplatform/exitcodes)";

    [Test]
    public void Testing_platform_failure_becomes_one_error_at_the_test_file_and_line()
    {
        var entries = Feed(PlatformOutput);
        var errors = Diagnostics(entries);
        Assert.That(errors, Has.Count.EqualTo(1));
        Assert.That(errors[0].Code, Is.EqualTo(OutputRecognizer.TestErrorCode));
        Assert.That((errors[0].File, errors[0].Line), Is.EqualTo(("/src/M/Tests.cs", 11)));
        Assert.That(errors[0].Message, Is.EqualTo("Fails failed: arithmetic Assert.That(1 + 1, Is.EqualTo(3)) Expected: 3 But was:  2"));
    }

    [Test]
    public void Testing_platform_summary_is_high_importance()
    {
        var high = Feed(PlatformOutput).OfType<MessageEntry>().Where(m => m.Importance == MessageImportance.High).Select(m => m.Text.Trim()).ToList();
        Assert.That(high, Is.SupersetOf(new[] { "Test run summary: Failed!", "total: 2", "failed: 1", "succeeded: 1", "skipped: 0", "duration: 975ms" }));
        Assert.That(high, Does.Not.Contain("Exit code: 2"));
    }

    [Test]
    public void Ansi_colours_are_removed()
    {
        var entries = Feed("\u001b[31m/src/A.cs(1,2): error CS1002: ; expected\u001b[0m\n\u001b[32mPassed!\u001b[0m  - Failed:     0, Passed:     1, Skipped:     0, Total:     1");
        Assert.That(Diagnostics(entries).Single().Message, Is.EqualTo("; expected"));
        Assert.That(entries.OfType<MessageEntry>().Single().Importance, Is.EqualTo(MessageImportance.High));
    }

    // Recorded from dotnet test (VSTest, NUnit) of tests whose messages read like result lines.
    private const string VsTestMessagesLikeResults =
        "  Failed ConnectsToDatabase [< 1 ms]\n" +
        "  Error Message:\n" +
        "   Failed to connect to db [ECONNREFUSED]\n" +
        "  Stack Trace:\n" +
        "     at T.MessageTests.ConnectsToDatabase() in /src/T/CalculatorTests.cs:line 27\n" +
        "\n" +
        "1)    at T.MessageTests.ConnectsToDatabase() in /src/T/CalculatorTests.cs:line 27\n" +
        "\n" +
        "\n" +
        "  Failed ParsesConfig [< 1 ms]\n" +
        "  Error Message:\n" +
        "   failed to parse config (line 3)\n" +
        "  Stack Trace:\n" +
        "     at T.MessageTests.ParsesConfig() in /src/T/CalculatorTests.cs:line 30\n" +
        "\n" +
        "1)    at T.MessageTests.ParsesConfig() in /src/T/CalculatorTests.cs:line 30\n" +
        "\n" +
        "\n" +
        "  Skipped WorkspaceIsWritable [< 1 ms]\n" +
        "\n" +
        "Failed!  - Failed:     2, Passed:     5, Skipped:     1, Total:     8, Duration: 62 ms - T.dll (net10.0)";

    // The same tests under Microsoft.Testing.Platform.
    private const string PlatformMessagesLikeResults =
        "failed ConnectsToDatabase (0ms)\n" +
        "  Failed to connect to db [ECONNREFUSED]\n" +
        "  from /src/T/bin/Debug/net10.0/T.dll (net10.0|x64)\n" +
        "  Failed to connect to db [ECONNREFUSED]\n" +
        "    at T.MessageTests.ConnectsToDatabase() in /src/T/CalculatorTests.cs:27\n" +
        "    \n" +
        "    1)    at T.MessageTests.ConnectsToDatabase() in /src/T/CalculatorTests.cs:line 27\n" +
        "    \n" +
        "    \n" +
        "failed ParsesConfig (0ms)\n" +
        "  failed to parse config (line 3)\n" +
        "  from /src/T/bin/Debug/net10.0/T.dll (net10.0|x64)\n" +
        "  failed to parse config (line 3)\n" +
        "    at T.MessageTests.ParsesConfig() in /src/T/CalculatorTests.cs:30\n" +
        "    \n" +
        "    1)    at T.MessageTests.ParsesConfig() in /src/T/CalculatorTests.cs:line 30\n" +
        "    \n" +
        "    \n" +
        "skipped WorkspaceIsWritable\n" +
        "  not inside the sandbox\n" +
        "  from /src/T/bin/Debug/net10.0/T.dll (net10.0|x64)\n" +
        "\n" +
        "Test run summary: Failed!\n" +
        "  total: 8\n" +
        "  failed: 2";

    [TestCase(VsTestMessagesLikeResults)]
    [TestCase(PlatformMessagesLikeResults)]
    public void A_message_that_reads_like_a_result_line_stays_its_tests_message(string output)
    {
        var errors = Diagnostics(Feed(output));
        Assert.That(errors.Select(e => (e.File, e.Line, e.Message)), Is.EqualTo(new[]
        {
            ("/src/T/CalculatorTests.cs", 27, "ConnectsToDatabase failed: Failed to connect to db [ECONNREFUSED]"),
            ("/src/T/CalculatorTests.cs", 30, "ParsesConfig failed: failed to parse config (line 3)"),
        }));
    }
}

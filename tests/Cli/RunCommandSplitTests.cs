using Sandbox.Cli;
using Sandbox.Cli.CommandLine;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Cli;

public class RunCommandSplitTests
{
    private readonly RunCommand _run = new();

    [TestCase(new[] { "--help" }, true)]
    [TestCase(new[] { "-h" }, true)]
    [TestCase(new[] { "-e", "X=1", "-?", "ls" }, true)]
    [TestCase(new[] { "df", "-h", "/" }, false)] // the payload's -h: df runs
    [TestCase(new[] { "sh", "-c", "echo hi", "-?" }, false)]
    [TestCase(new[] { "--", "ls", "--help" }, false)]
    [TestCase(new[] { "--hostname", "-h", "--", "hostname" }, false)] // an option's value
    public void Help_IsAskedOnlyAmongOurOwnOptions(string[] tokens, bool asks)
    {
        _run.Split(tokens, out bool help);
        Assert.That(help, Is.EqualTo(asks));
    }

    [TestCase("--network", "bogus", "--network bogus: expected none or host")]
    [TestCase("--memory", "abc", "--memory abc: expected a size such as 512m, 1g or 100k")]
    [TestCase("--timeout", "abc", "--timeout abc: expected a positive duration")]
    public void ABadOptionValue_IsACommandLineError_EndingWithTheHelpLine(string option, string value, string message)
    {
        var (own, command) = _run.Split([option, value, "true"]);
        ParseResult parse = _run.Parse(own);
        var e = Assert.Throws<SandboxException>(() => Program.FromCommandLine("run", () => _run.BuildSpec(parse, command)));
        Assert.That(e!.Message, Does.StartWith(message).And.EndWith("\nSee 'sandbox run --help'."));
        Assert.That(e.ExitCode, Is.EqualTo(125));
    }

    [Test]
    public void DoubleDash_EndsOurOptions()
    {
        var (own, command) = _run.Split(["--", "ls", "-l"]);
        Assert.That(own, Is.Empty);
        Assert.That(command, Is.EqualTo(new[] { "ls", "-l" }));
    }

    [Test]
    public void OptionValue_IsOurs_CommandStartsAtTheFirstWord()
    {
        var (own, command) = _run.Split(["-v", "/a:/b", "ls", "-l"]);
        Assert.That(own, Is.EqualTo(new[] { "-v", "/a:/b" }));
        Assert.That(command, Is.EqualTo(new[] { "ls", "-l" }));
    }

    [Test]
    public void OptionWithEquals_TakesNoSeparateValue_AndTheCommandKeepsItsFlags()
    {
        var (own, command) = _run.Split(["--timeout=1s", "echo", "--timeout"]);
        Assert.That(own, Is.EqualTo(new[] { "--timeout=1s" }));
        Assert.That(command, Is.EqualTo(new[] { "echo", "--timeout" }));
    }

    [Test]
    public void CommandFlagsLikeOurs_AreNotTakenAfterTheCommand()
    {
        var (own, command) = _run.Split(["-e", "A=1", "dotnet", "test", "-e", "B=2", "-v", "x"]);
        Assert.That(own, Is.EqualTo(new[] { "-e", "A=1" }));
        Assert.That(command, Is.EqualTo(new[] { "dotnet", "test", "-e", "B=2", "-v", "x" }));
    }

    [Test]
    public void BoolOption_TakesNoValue()
    {
        var (own, command) = _run.Split(["-i", "cat"]);
        Assert.That(own, Is.EqualTo(new[] { "-i" }));
        Assert.That(command, Is.EqualTo(new[] { "cat" }));

        (own, command) = _run.Split(["--interactive", "cat", "-"]);
        Assert.That(own, Is.EqualTo(new[] { "--interactive" }));
        Assert.That(command, Is.EqualTo(new[] { "cat", "-" }));
    }

    [Test]
    public void LongAliases_TakeValues()
    {
        var (own, command) = _run.Split(["--volume", "/a:/b", "--workdir", "/b", "--network", "host", "make"]);
        Assert.That(own, Is.EqualTo(new[] { "--volume", "/a:/b", "--workdir", "/b", "--network", "host" }));
        Assert.That(command, Is.EqualTo(new[] { "make" }));
    }

    [Test]
    public void HostRoot_ThenDoubleDash()
    {
        var (own, command) = _run.Split(["host", "--", "id"]);
        Assert.That(own, Is.EqualTo(new[] { "host" }));
        Assert.That(command, Is.EqualTo(new[] { "id" }));
    }

    [Test]
    public void HostRoot_WithoutDoubleDash()
    {
        var (own, command) = _run.Split(["host", "id", "-u"]);
        Assert.That(own, Is.EqualTo(new[] { "host" }));
        Assert.That(command, Is.EqualTo(new[] { "id", "-u" }));
    }

    [Test]
    public void OnlyTheFirstWordCanBeARoot()
    {
        // The second "host" is the command (a program named host), not a second root.
        var (own, command) = _run.Split(["host", "host", "example.com"]);
        Assert.That(own, Is.EqualTo(new[] { "host" }));
        Assert.That(command, Is.EqualTo(new[] { "host", "example.com" }));
    }

    [Test]
    public void ExistingDirectory_IsTheRoot()
    {
        using var dir = new TempDirectory();
        var (own, command) = _run.Split(["-w", "/", dir.Path, "/bin/sh", "-c", "pwd"]);
        Assert.That(own, Is.EqualTo(new[] { "-w", "/", dir.Path }));
        Assert.That(command, Is.EqualTo(new[] { "/bin/sh", "-c", "pwd" }));
    }

    [Test]
    public void AWordRightBeforeDoubleDash_IsTheRootWhateverItNames()
    {
        // `sandbox run alpine -- sh` with no such image: ResolveRoot then says "no such image", where
        // the word ran as the command and the run ended "command not found" (127).
        var (own, command) = _run.Split(["--root", "/nonexistent-store", "no-such-image", "--", "sh"]);
        Assert.That(own, Is.EqualTo(new[] { "--root", "/nonexistent-store", "no-such-image" }));
        Assert.That(command, Is.EqualTo(new[] { "sh" }));
    }

    [Test]
    public void ABareWordNamingADirectoryOfTheWorkingDirectory_IsTheCommand()
    {
        // A test/ or build/ folder must not capture the command of that name; ./test is the root.
        using var dir = new TempDirectory();
        Directory.CreateDirectory(Path.Combine(dir.Path, "test"));
        string saved = Environment.CurrentDirectory;
        Environment.CurrentDirectory = dir.Path;
        try
        {
            var (own, command) = _run.Split(["--root", "/nonexistent-store", "test", "-d", "/tmp"]);
            Assert.That(own, Is.EqualTo(new[] { "--root", "/nonexistent-store" }));
            Assert.That(command, Is.EqualTo(new[] { "test", "-d", "/tmp" }));
            (own, command) = _run.Split(["./test", "true"]);
            Assert.That(own, Is.EqualTo(new[] { "./test" }));
            Assert.That(command, Is.EqualTo(new[] { "true" }));
        }
        finally
        {
            Environment.CurrentDirectory = saved;
        }
    }

    [Test]
    public void EverythingAfterTheRoot_IsTheCommands_AsAfterDockersImage()
    {
        var (own, command) = _run.Split(["-e", "A=1", "host", "--version"]);
        Assert.That(own, Is.EqualTo(new[] { "-e", "A=1", "host" }));
        Assert.That(command, Is.EqualTo(new[] { "--version" }));
        (own, command) = _run.Split(["host", "-e", "B=2", "--", "x"]);
        Assert.That(own, Is.EqualTo(new[] { "host" }));
        Assert.That(command, Is.EqualTo(new[] { "-e", "B=2", "--", "x" }));
        (own, command) = _run.Split(["host", "--", "-x"]);
        Assert.That(command, Is.EqualTo(new[] { "-x" }), "a -- right after the root is the separator");
    }

    [Test]
    public void ExistingFile_IsTheCommand()
    {
        Assume.That(File.Exists("/bin/sh"), Is.True);
        var (own, command) = _run.Split(["/bin/sh", "-c", "x"]);
        Assert.That(own, Is.Empty);
        Assert.That(command, Is.EqualTo(new[] { "/bin/sh", "-c", "x" }));
    }

    [Test]
    public void NoCommand_EmptyCommand()
    {
        var (own, command) = _run.Split(["-v", "/a:/b"]);
        Assert.That(own, Is.EqualTo(new[] { "-v", "/a:/b" }));
        Assert.That(command, Is.Empty);

        (own, command) = _run.Split([]);
        Assert.That(own, Is.Empty);
        Assert.That(command, Is.Empty);
    }

    [Test]
    public void OptionMissingItsValueAtTheEnd_IsKeptForTheParserToReport()
    {
        var (own, command) = _run.Split(["--timeout"]);
        Assert.That(own, Is.EqualTo(new[] { "--timeout" }));
        Assert.That(command, Is.Empty);
    }

    [Test]
    public void SingleDash_IsACommandWord()
    {
        var (own, command) = _run.Split(["-", "x"]);
        Assert.That(own, Is.Empty);
        Assert.That(command, Is.EqualTo(new[] { "-", "x" }));
    }

    [Test]
    public void UnknownOptionIsRejectedAsDockerDoes()
    {
        // It would otherwise end up as ROOT (an argument takes it): `sandbox: --bogus: no such image`.
        var e = Assert.Throws<SandboxException>(() => _run.Split(["--bogus", "ls"]));
        Assert.That(e!.Message, Does.StartWith("unknown flag: --bogus"));
        // The last line as every other command-line error's (CommandLine/Parser.cs), as docker's.
        Assert.That(e.Message, Does.EndWith("\nSee 'sandbox run --help'."));
        Assert.That(e.ExitCode, Is.EqualTo(125));
        Assert.Throws<SandboxException>(() => _run.Split(["--bogus=1", "ls"]));
        // After the command or --, it is the payload's.
        Assert.That(_run.Split(["ls", "--bogus"]).PayloadCommand, Is.EqualTo(new[] { "ls", "--bogus" }));
        Assert.That(_run.Split(["--", "--bogus"]).PayloadCommand, Is.EqualTo(new[] { "--bogus" }));
    }
}

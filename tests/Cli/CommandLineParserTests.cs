using Sandbox.Cli.CommandLine;

namespace Sandbox.Tests.Cli;

public class CommandLineParserTests
{
    private readonly Option<string[]> _volume = new("--volume", "-v") { HelpName = "HOST:CONTAINER" };
    private readonly Option<string> _network = new("--network") { DefaultValue = "none", Description = "The network" };
    private readonly Option<string?> _memorySwap = new("--memory-swap");
    private readonly Option<bool> _interactive = new("--interactive", "-i");
    private readonly Option<long?> _pids = new("--pids-limit");
    private readonly Option<double?> _cpus = new("--cpus");
    private readonly Argument<string?> _root = new("ROOT") { Arity = ArgumentArity.ZeroOrOne };
    private readonly Argument<string[]> _command = new("COMMAND") { Arity = ArgumentArity.ZeroOrMore };

    private Command Run() => new("run", "Run a command") { _volume, _network, _memorySwap, _interactive, _pids, _cpus, _root, _command };

    [Test]
    public void ValuesInEveryForm()
    {
        ParseResult parse = Run().Parse(["-v", "/a:/b", "--volume=/c:/d", "--network", "host", "--pids-limit=20", "--cpus", "1.5", "-i", "dir", "ls", "x"]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.GetValue(_volume), Is.EqualTo(new[] { "/a:/b", "/c:/d" }));
        Assert.That(parse.GetValue(_network), Is.EqualTo("host"));
        Assert.That(parse.GetValue(_pids), Is.EqualTo(20));
        Assert.That(parse.GetValue(_cpus), Is.EqualTo(1.5));
        Assert.That(parse.GetValue(_interactive), Is.True);
        Assert.That(parse.GetValue(_root), Is.EqualTo("dir"));
        Assert.That(parse.GetValue(_command), Is.EqualTo(new[] { "ls", "x" }));
    }

    [Test]
    public void Defaults_WhenAbsent()
    {
        ParseResult parse = Run().Parse([]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.GetValue(_volume), Is.Empty);
        Assert.That(parse.GetValue(_network), Is.EqualTo("none"));
        Assert.That(parse.GetValue(_memorySwap), Is.Null);
        Assert.That(parse.GetValue(_interactive), Is.False);
        Assert.That(parse.GetValue(_pids), Is.Null);
        Assert.That(parse.GetValue(_root), Is.Null);
        Assert.That(parse.GetValue(_command), Is.Empty);
    }

    [Test]
    public void AValueWordIsTakenAsItIs_EvenWithADash()
    {
        ParseResult parse = Run().Parse(["--memory-swap", "-1"]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.GetValue(_memorySwap), Is.EqualTo("-1"));
    }

    [Test]
    public void TheLastOfASingleValueOptionWins_AsInDocker()
    {
        Assert.That(Run().Parse(["--network", "host", "--network", "none"]).GetValue(_network), Is.EqualTo("none"));
    }

    [Test]
    public void AFlagCanBeTurnedOffExplicitly()
    {
        Assert.That(Run().Parse(["--interactive=false"]).GetValue(_interactive), Is.False);
        Assert.That(Run().Parse(["-i=true"]).GetValue(_interactive), Is.True);
        Assert.That(Run().Parse(["-i=maybe"]).Errors, Is.EqualTo(new[] { "--interactive=maybe: expected true or false" }));
    }

    [Test]
    public void DoubleDash_EndsTheOptions()
    {
        ParseResult parse = Run().Parse(["-i", "--", "--network", "x"]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.GetValue(_network), Is.EqualTo("none"));
        Assert.That(parse.GetValue(_root), Is.EqualTo("--network"));
        Assert.That(parse.GetValue(_command), Is.EqualTo(new[] { "x" }));
    }

    [TestCase(new[] { "--bogus" }, "unknown flag: --bogus")]
    [TestCase(new[] { "--bogus=1" }, "unknown flag: --bogus")]
    [TestCase(new[] { "--network" }, "flag needs an argument: --network")]
    [TestCase(new[] { "--pids-limit", "many" }, "--pids-limit many: expected a whole number")]
    [TestCase(new[] { "--pids-limit", "1.5" }, "--pids-limit 1.5: expected a whole number")]
    [TestCase(new[] { "--cpus", "1,5" }, "--cpus 1,5: expected a number, e.g. 1.5")]
    public void BadLines_SayWhatIsWrong(string[] args, string error)
    {
        ParseResult parse = Run().Parse(args);
        Assert.That(parse.Errors, Is.EqualTo(new[] { error }));
    }

    [Test]
    public void HelpWins_OverErrors()
    {
        ParseResult parse = Run().Parse(["--bogus", "-h"]);
        Assert.That(parse.HelpRequested, Is.True);
        Assert.That(parse.Errors, Is.Empty);
    }

    [Test]
    public void Subcommands_ByNameOrAlias_WithRecursiveOptionsOfTheirParent()
    {
        var store = new Option<string?>("--root") { Recursive = true };
        var quiet = new Option<bool>("--quiet", "-q");
        var image = new Argument<string>("IMAGE");
        var list = new Command("ls", "List") { quiet };
        list.Aliases.Add("list");
        var inspect = new Command("inspect", "Inspect") { image };
        var images = new Command("image", "Images") { store, list, inspect };
        var root = new RootCommand("Sandbox") { images };

        ParseResult parse = root.Parse(["image", "--root", "/s", "list", "-q"]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.Command, Is.SameAs(list));
        Assert.That(parse.CommandPath, Is.EqualTo("sandbox image ls"));
        Assert.That(parse.GetValue(store), Is.EqualTo("/s"));
        Assert.That(parse.GetValue(quiet), Is.True);

        parse = root.Parse(["image", "inspect", "--root=/t", "alpine"]);
        Assert.That(parse.Errors, Is.Empty);
        Assert.That(parse.GetValue(store), Is.EqualTo("/t"));
        Assert.That(parse.GetValue(image), Is.EqualTo("alpine"));

        Assert.That(root.Parse(["image", "inspect"]).Errors, Is.EqualTo(new[] { "'inspect' needs IMAGE" }));
        Assert.That(root.Parse(["image", "inspect", "a", "b"]).Errors, Is.EqualTo(new[] { "'inspect' takes no argument 'b' here" }));
        Assert.That(root.Parse(["image", "pull"]).Errors, Is.EqualTo(new[] { "'pull' is not a command of 'sandbox image'" }));
        // A subcommand's own option is not its parent's.
        Assert.That(root.Parse(["image", "-q", "ls"]).Errors, Is.EqualTo(new[] { "unknown flag: -q" }));
    }

    [Test]
    public void Version_OnlyOnTheRoot()
    {
        var root = new RootCommand("Sandbox") { Run() };
        Assert.That(root.Parse(["--version"]).VersionRequested, Is.True);
        Assert.That(root.Parse(["run", "--version"]).Errors, Is.EqualTo(new[] { "unknown flag: --version" }));
    }

    [Test]
    public void Help_ListsUsageArgumentsAndOptionsWithTheirValuesAndDefaults()
    {
        var root = new RootCommand("Sandbox") { Run() };
        string help = HelpText.Render(root.Parse(["run", "--help"]));
        Assert.That(help, Does.StartWith("Usage: sandbox run [OPTIONS] [ROOT] [COMMAND...]\n\nRun a command\n"));
        Assert.That(help, Does.Contain("  -v, --volume HOST:CONTAINER  "));
        Assert.That(help, Does.Contain("--network NETWORK").And.Contain("The network [default: none]"));
        Assert.That(help, Does.Contain("-i, --interactive "));
        Assert.That(help, Does.Contain("-h, --help"));
        Assert.That(help, Does.Not.Contain("--version"));
        Assert.That(HelpText.Render(root.Parse(["--help"])), Does.Contain("Commands:\n  run  Run a command\n").And.Contain("--version"));
    }
}

using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Runtime;

public class ProgramSearchTests
{
    [Test]
    public void TheFirstDirectoryThatHoldsTheNameAsAFileWins()
    {
        using var dir = new TempDirectory();
        string first = dir.CreateDirectory("first"), second = dir.CreateDirectory("second"), third = dir.CreateDirectory("third");
        Directory.CreateDirectory(Path.Combine(first, "tool")); // a directory is no program
        dir.CreateFile("second/tool");
        dir.CreateFile("third/tool");
        Assert.That(ProgramSearch.Find("tool", $"{first}::{second}:{third}"), Is.EqualTo(Path.Combine(second, "tool")));
        Assert.That(ProgramSearch.Find("tool", first), Is.Null);
        Assert.That(ProgramSearch.Find("missing", $"{second}:{third}"), Is.Null);
    }

    [Test]
    public void RelativeEntriesAreSkipped()
    {
        using var dir = new TempDirectory();
        dir.CreateFile("bin/tool");
        string previous = Environment.CurrentDirectory;
        Environment.CurrentDirectory = dir.Path;
        try
        {
            Assert.That(File.Exists("bin/tool"), "the fixture is there, relative to the working directory");
            Assert.That(ProgramSearch.Find("tool", "bin:./bin:."), Is.Null);
        }
        finally
        {
            Environment.CurrentDirectory = previous;
        }
    }
}

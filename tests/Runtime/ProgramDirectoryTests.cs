using Sandbox.Runtime;

namespace Sandbox.Tests.Runtime;

public sealed class ProgramDirectoryTests
{
    [TestCase("/home/u/bin/sandbox", "/home/u/bin/")]
    [TestCase("/sandbox", "/")]
    [TestCase("/opt/sandbox dir/sandbox", "/opt/sandbox dir/")]
    public void IsTheExecutablesDirectoryWithASlash(string executable, string expected) =>
        Assert.That(ProgramDirectory.FromExecutable(executable), Is.EqualTo(expected));

    [TestCase(null)]
    [TestCase("")]
    [TestCase("sandbox")] // outside this process's root: proc(5) gives no leading slash
    [TestCase("/home/u/bin/sandbox (deleted)")]
    public void LeavesUnusualLinksToAppContext(string? executable) =>
        Assert.That(ProgramDirectory.FromExecutable(executable), Is.Null);

    [Test]
    public void UnderTheDotnetHostIsAppContextsBaseDirectory() =>
        // The test host sets APP_CONTEXT_BASE_DIRECTORY, as the JIT CLI's host does.
        Assert.That(ProgramDirectory.Path, Is.EqualTo(AppContext.BaseDirectory));
}

namespace Sandbox.Tests.Core;

public class ErrorCodeTests
{
    [TestCase(SandboxErrorCode.CommandNotFound, 127)]
    [TestCase(SandboxErrorCode.CommandNotExecutable, 126)]
    [TestCase(SandboxErrorCode.InvalidSpec, 125)]
    [TestCase(SandboxErrorCode.SetupFailed, 125)]
    [TestCase(SandboxErrorCode.IdMappingFailed, 125)]
    [TestCase(SandboxErrorCode.WorkingDirectoryUnavailable, 125)]
    [TestCase(SandboxErrorCode.LimitsUnavailable, 125)]
    [TestCase(SandboxErrorCode.Internal, 125)]
    public void ExitCode(SandboxErrorCode code, int exitCode)
    {
        Assert.That(code.ExitCode(), Is.EqualTo(exitCode));
        Assert.That(new SandboxException(code, "m").ExitCode, Is.EqualTo(exitCode));
    }

    [TestCase(SandboxErrorCode.InvalidSpec, "SBX001")]
    [TestCase(SandboxErrorCode.CommandNotFound, "SBX005")]
    [TestCase(SandboxErrorCode.SpawnFailed, "SBX009")]
    [TestCase(SandboxErrorCode.Internal, "SBX099")]
    public void Format(SandboxErrorCode code, string text)
    {
        Assert.That(code.Format(), Is.EqualTo(text));
    }

    [Test]
    public void StableNumbers()
    {
        // Scripts and the MSBuild task match on these: they must never change.
        Assert.That((int)SandboxErrorCode.InvalidSpec, Is.EqualTo(1));
        Assert.That((int)SandboxErrorCode.UserNamespacesUnavailable, Is.EqualTo(2));
        Assert.That((int)SandboxErrorCode.IdMappingFailed, Is.EqualTo(3));
        Assert.That((int)SandboxErrorCode.SetupFailed, Is.EqualTo(4));
        Assert.That((int)SandboxErrorCode.CommandNotFound, Is.EqualTo(5));
        Assert.That((int)SandboxErrorCode.CommandNotExecutable, Is.EqualTo(6));
        Assert.That((int)SandboxErrorCode.WorkingDirectoryUnavailable, Is.EqualTo(7));
        Assert.That((int)SandboxErrorCode.NativeExecutorUnavailable, Is.EqualTo(8));
        Assert.That((int)SandboxErrorCode.SpawnFailed, Is.EqualTo(9));
        Assert.That((int)SandboxErrorCode.CgroupFailed, Is.EqualTo(10));
        Assert.That((int)SandboxErrorCode.LimitsUnavailable, Is.EqualTo(11));
        Assert.That((int)SandboxErrorCode.OwnerOutsideIdMap, Is.EqualTo(31));
        Assert.That((int)SandboxErrorCode.LayerIdMapMismatch, Is.EqualTo(32));
        Assert.That((int)SandboxErrorCode.StoreNotPrivate, Is.EqualTo(33));
        Assert.That((int)SandboxErrorCode.OutputLost, Is.EqualTo(12));
        Assert.That((int)SandboxErrorCode.Internal, Is.EqualTo(99));
    }

    [Test]
    public void Exception_KeepsCodeMessageAndInner()
    {
        var inner = new IOException("disk");
        var e = new SandboxException(SandboxErrorCode.SetupFailed, "could not mount", inner);
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.SetupFailed));
        Assert.That(e.Message, Is.EqualTo("could not mount"));
        Assert.That(e.InnerException, Is.SameAs(inner));
    }
}

using System.Text.RegularExpressions;
using Sandbox.Linux;
using Sandbox.Runtime;
using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Runtime;

/// <summary>
/// A failure of the native /dev build names the part it was making (the report's value): the C side
/// (sandbox_kernel.h, enum sbx_dev_part) and <see cref="BuildDevStep.Part"/> must agree.
/// </summary>
public class BuildDevFailureTests
{
    [Test]
    public void ThePartsAreTheNativeCodesValues()
    {
        string header = File.ReadAllText(NativeSources.Path("sandbox_kernel.h"));
        var native = Regex.Matches(header, @"SBX_DEV_([A-Z_]+) = (\d+),")
            .ToDictionary(m => m.Groups[1].Value.Replace("_", "", StringComparison.Ordinal), m => int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture));
        var managed = Enum.GetValues<BuildDevStep.Part>().ToDictionary(p => p.ToString().ToUpperInvariant(), p => (int)p);
        Assert.That(native, Has.Count.EqualTo(5), header);
        Assert.That(managed, Is.EquivalentTo(native));
    }

    [Test]
    public void AMissingHostDeviceIsNamedWithTheFix()
    {
        string message = SandboxProcess.SetupFailureMessage(8, new BuildDevStep(), Errno.ENOENT, (int)BuildDevStep.Part.HostDevices);
        Assert.That(message, Does.StartWith("setting up the sandbox failed at step 9 (build /dev on the scratch root: the binds of the host's /dev/null, zero, full, random, urandom and tty): "));
        Assert.That(message, Does.EndWith(". One of them is missing on this host: in a container, start it with the usual /dev (docker and podman give every container these six)"));
    }

    [Test]
    public void EveryPartHasItsOwnWords_AndOnlyTheBindsGetTheMissingDeviceHint()
    {
        var messages = Enum.GetValues<BuildDevStep.Part>()
            .Select(p => SandboxProcess.SetupFailureMessage(8, new BuildDevStep(), Errno.ENOENT, (int)p)).ToList();
        Assert.That(messages.Distinct().Count(), Is.EqualTo(messages.Count));
        Assert.That(messages.Count(m => m.Contains("One of them is missing", StringComparison.Ordinal)), Is.EqualTo(1));
        Assert.That(SandboxProcess.SetupFailureMessage(8, new BuildDevStep(), Errno.EPERM, (int)BuildDevStep.Part.Devpts),
            Does.Contain("(build /dev on the scratch root: its private devpts at /dev/pts): "));
        Assert.That(SandboxProcess.SetupFailureMessage(8, new BuildDevStep(), Errno.EPERM, 0), Does.Contain("(build /dev on the scratch root): "));
    }
}

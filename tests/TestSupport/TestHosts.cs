using System.Collections.Immutable;
using Sandbox.Identity;
using Sandbox.Rootfs;

namespace Sandbox.Tests.TestSupport;

/// <summary>A fake host for planning: a home that exists, and no subuid range.</summary>
internal sealed class FakeHost : IDisposable
{
    public const string HostPath = "/opt/fake/bin:/usr/bin:/bin";
    public const string Term = "xterm-test";

    private readonly TempDirectory _dir = new();

    public FakeHost()
    {
        Home = _dir.CreateDirectory("home", "alice");
        EmptyBin = _dir.CreateDirectory("emptybin");
        Identity = new IdentityEnvironment(
            1000,
            1000,
            "alice",
            SubUidFile: _dir.Combine("no-such-subuid"),
            SubGidFile: _dir.Combine("no-such-subgid"),
            SearchPath: EmptyBin);
        // No session sockets or engines to hide unless a test says so: plans must not depend on the machine.
        Context = new HostContext(Home, HostPath, Term, Identity, SocketDirectories: [], EngineSockets: []);
    }

    public TempDirectory Dir => _dir;

    public string Home { get; }

    public string EmptyBin { get; }

    public IdentityEnvironment Identity { get; }

    public HostContext Context { get; }

    public void Dispose() => _dir.Dispose();
}

internal static class PlanSteps
{
    /// <summary>The steps without their confinement marker, so tests can compare them as written.</summary>
    public static System.Collections.Immutable.ImmutableArray<Sandbox.Runtime.SetupStep> Unconfined(this System.Collections.Immutable.ImmutableArray<Sandbox.Runtime.SetupStep> steps) =>
        steps.Select(s => s with { ResolveIn = null }).ToImmutableArray();
}

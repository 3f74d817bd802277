using System.Diagnostics;
using System.Net.Sockets;
using Sandbox.Cgroups;
using Sandbox.Tests.TestSupport;
using Tmds.DBus.Protocol;

namespace Sandbox.Tests.Cgroups;

/// <summary>Where the user manager is looked for, and the small parsers around its answers.</summary>
public class SystemdEndpointTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    [Test]
    public void SessionBusFirst_ThenTheManagersPrivateSocket_WithoutDuplicates()
    {
        var endpoints = SystemdUserManager.Endpoints(Env(("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"), ("XDG_RUNTIME_DIR", "/run/user/1000")), 1000);

        Assert.That(endpoints.Select(e => e.Address), Is.EqualTo(new[] { "unix:path=/run/user/1000/bus", "unix:path=/run/user/1000/systemd/private" }));
        Assert.That(endpoints.Select(e => e.SocketPath), Is.EqualTo(new[] { "/run/user/1000/bus", "/run/user/1000/systemd/private" }));
        Assert.That(endpoints[0].Display, Is.EqualTo("$DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus"));
        Assert.That(endpoints[1].Display, Is.EqualTo("the manager's private socket /run/user/1000/systemd/private"));
    }

    [Test]
    public void ASessionBusElsewhere_TheUserBusIsTriedToo()
    {
        // dbus-launch's per-session bus (no systemd on it), then the systemd ones.
        var endpoints = SystemdUserManager.Endpoints(Env(("DBUS_SESSION_BUS_ADDRESS", "unix:abstract=/tmp/dbus-XYZ,guid=0f"), ("XDG_RUNTIME_DIR", "/run/user/1000/")), 1000);

        Assert.That(endpoints.Select(e => e.Address), Is.EqualTo(new[]
        {
            "unix:abstract=/tmp/dbus-XYZ,guid=0f", "unix:path=/run/user/1000/bus", "unix:path=/run/user/1000/systemd/private",
        }));
        Assert.That(endpoints[0].SocketPath, Is.Null, "an abstract socket has no file to look for");
        Assert.That(endpoints[1].Display, Is.EqualTo("the user bus /run/user/1000/bus"));
    }

    [Test]
    public void NoRuntimeDirectory_IsRunUserUid()
    {
        // A CI service or cron job: pam_systemd never set $XDG_RUNTIME_DIR.
        var endpoints = SystemdUserManager.Endpoints(Env(), 1001);

        Assert.That(endpoints.Select(e => e.SocketPath), Is.EqualTo(new[] { "/run/user/1001/bus", "/run/user/1001/systemd/private" }));
    }

    [TestCase("unix:path=/run/user/1000/bus", "/run/user/1000/bus")]
    [TestCase("unix:path=/run/user/1000/bus,guid=1234", "/run/user/1000/bus")]
    [TestCase("unix:guid=1234,path=/x/bus", "/x/bus")]
    [TestCase("unix:abstract=/tmp/dbus-1", null)]
    [TestCase("unix:path=/a;unix:path=/b", null)]
    [TestCase("unix:path=/with%20space", null)]
    [TestCase("tcp:host=localhost,port=1", null)]
    public void UnixPath(string address, string? expected) =>
        Assert.That(SystemdUserManager.UnixPath(address), Is.EqualTo(expected));

    [TestCase("Cannot set property OOMPolicy, or unknown property.", "OOMPolicy")]
    [TestCase("Cannot set property CollectMode, or unknown property.", "CollectMode")]
    [TestCase("Unit sandbox-1-2.scope already exists.", null)]
    [TestCase(null, null)]
    public void RejectedProperty(string? message, string? expected) =>
        Assert.That(SystemdUserManager.RejectedProperty(message), Is.EqualTo(expected));

    [Test]
    public void ScopeNames_AreValidUnitNames_NamedAfterThePid_AndDistinct()
    {
        string a = SystemdUserManager.NewScopeName(4242);
        string b = SystemdUserManager.NewScopeName(4242);

        Assert.That(a, Does.Match(@"^sandbox-4242-[0-9a-f]{8}\.scope$"));
        Assert.That(b, Is.Not.EqualTo(a));
    }
}

/// <summary>
/// The D-Bus side for real: a private dbus-daemon, and on it a stand-in for systemd's Manager object
/// that records what StartTransientUnit received and answers as systemd does (a job path, then
/// JobRemoved; or systemd's error for a property it does not know). The real systemd answers in the
/// integration suite (SystemdScopeTests).
/// </summary>
[NonParallelizable]
public class SystemdUserManagerTests
{
    private TempDirectory _dir = null!;
    private readonly List<Process> _daemons = [];

    [SetUp]
    public void SetUp() => _dir = new TempDirectory();

    [TearDown]
    public void TearDown()
    {
        foreach (Process daemon in _daemons)
        {
            if (!daemon.HasExited)
                daemon.Kill();
            daemon.WaitForExit();
            daemon.Dispose();
        }
        _daemons.Clear();
        _dir.Dispose();
    }

    /// <summary>A dbus-daemon of our own (dbus-daemon(1)), listening on a socket in the test's directory.</summary>
    private SystemdEndpoint StartBus(string name)
    {
        if (!File.Exists("/usr/bin/dbus-daemon"))
            Skip.Because("dbus-daemon is not installed (ci/setup-host installs dbus)");
        string socket = _dir.Combine(name);
        var psi = new ProcessStartInfo("/usr/bin/dbus-daemon") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { "--session", "--nofork", "--nopidfile", "--print-address=1", $"--address=unix:path={socket}" })
            psi.ArgumentList.Add(arg);
        var daemon = Process.Start(psi)!;
        _daemons.Add(daemon);
        string? address = daemon.StandardOutput.ReadLine(); // printed once it listens
        Assert.That(address, Does.StartWith("unix:path=" + socket), "dbus-daemon did not start");
        return new SystemdEndpoint("unix:path=" + socket, "bus " + name, socket);
    }

    private static SystemdUserManager Manager(params SystemdEndpoint[] endpoints) => new(() => endpoints);

    [Test]
    public async Task StartTransientUnit_AsSystemdExpectsIt_AndTheJobIsWaitedFor()
    {
        SystemdEndpoint bus = StartBus("bus");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(bus.Address);

        SystemdScope scope = Manager(bus).StartDelegatedScope(4242, TimeSpan.FromSeconds(10));

        Assert.That(scope.Via, Is.EqualTo("bus bus"));
        FakeSystemd.Call call = systemd.Calls.Single();
        Assert.That(call.Unit, Is.EqualTo(scope.UnitName));
        Assert.That(call.Unit, Does.Match(@"^sandbox-4242-[0-9a-f]{8}\.scope$"));
        Assert.That(call.Mode, Is.EqualTo("fail"));
        Assert.That(call.Properties.Keys, Is.EquivalentTo(new[] { "Description", "PIDs", "Delegate", "OOMPolicy", "CollectMode" }));
        Assert.That(call.Properties["PIDs"].GetArray<uint>(), Is.EqualTo(new uint[] { 4242 }));
        Assert.That(call.Properties["Delegate"].GetBool(), Is.True);
        Assert.That(call.Properties["OOMPolicy"].GetString(), Is.EqualTo("continue"));
        Assert.That(call.Properties["CollectMode"].GetString(), Is.EqualTo("inactive-or-failed"));
        Assert.That(call.Properties["Description"].GetString(), Does.Contain("4242"));
        Assert.That(call.AuxiliaryUnits, Is.Zero);
        Assert.That(systemd.JobsRemoved, Is.EqualTo(1));
    }

    [Test]
    public async Task AnOlderSystemd_RejectsAProperty_AndIsAskedAgainWithoutIt()
    {
        SystemdEndpoint bus = StartBus("bus");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(bus.Address);
        systemd.UnknownProperties.Add("OOMPolicy");

        SystemdScope scope = Manager(bus).StartDelegatedScope(4242, TimeSpan.FromSeconds(10));

        Assert.That(systemd.Calls, Has.Count.EqualTo(2));
        Assert.That(systemd.Calls[0].Properties.Keys, Does.Contain("OOMPolicy"));
        Assert.That(systemd.Calls[1].Properties.Keys, Is.EquivalentTo(new[] { "Description", "PIDs", "Delegate", "CollectMode" }));
        Assert.That(scope.UnitName, Is.EqualTo(systemd.Calls[1].Unit));
    }

    [Test]
    public async Task AFailedJob_IsReportedWithItsResult()
    {
        SystemdEndpoint bus = StartBus("bus");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(bus.Address);
        systemd.JobResult = "failed";

        var e = Assert.Throws<SystemdUnavailableException>(() => Manager(bus).StartDelegatedScope(4242, TimeSpan.FromSeconds(10)));

        Assert.That(e!.Attempts.Single().ToString(), Does.Match(@"^bus bus: systemd's job to start sandbox-4242-[0-9a-f]{8}\.scope ended with 'failed'$"));
    }

    [Test]
    public async Task NoJobRemoved_IsATimeout()
    {
        SystemdEndpoint bus = StartBus("bus");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(bus.Address);
        systemd.EmitJobRemoved = false;
        var sw = Stopwatch.StartNew();

        var e = Assert.Throws<SystemdUnavailableException>(() => Manager(bus).StartDelegatedScope(4242, TimeSpan.FromMilliseconds(700)));

        Assert.That(e!.Attempts.Single().Error, Is.EqualTo("no answer in time"));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public void ABusWithoutSystemd_SaysSo_AndTheNextEndpointIsTried()
    {
        SystemdEndpoint empty = StartBus("empty");
        SystemdEndpoint missing = new("unix:path=" + _dir.Combine("gone"), "missing socket", _dir.Combine("gone"));

        var e = Assert.Throws<SystemdUnavailableException>(() => Manager(empty, missing).StartDelegatedScope(4242, TimeSpan.FromSeconds(10)));

        Assert.That(e!.Attempts, Has.Count.EqualTo(2));
        Assert.That(e.Attempts[0].Where, Is.EqualTo("bus empty"));
        Assert.That(e.Attempts[0].Error, Is.EqualTo("Name \"org.freedesktop.systemd1\" does not exist (org.freedesktop.DBus.Error.NameHasNoOwner)"),
            "NoAutoStart: no attempt to activate the name (a session bus would run systemd's /bin/false stub)");
        Assert.That(e.Attempts[1].ToString(), Is.EqualTo("missing socket: no such socket"));
        Assert.That(e.Message, Does.StartWith("no systemd user manager gave a delegated scope (bus empty: "));
    }

    [Test]
    public async Task TheFirstEndpointThatWorksIsUsed()
    {
        SystemdEndpoint empty = StartBus("empty");
        SystemdEndpoint good = StartBus("good");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(good.Address);

        SystemdScope scope = Manager(new("unix:path=/nonexistent/bus", "missing", "/nonexistent/bus"), empty, good).StartDelegatedScope(7, TimeSpan.FromSeconds(10));

        Assert.That(scope.Via, Is.EqualTo("bus good"));
        Assert.That(systemd.Calls, Has.Count.EqualTo(1));
    }

    [Test]
    public async Task APrivateSocketConnection_WorksWithARealServer()
    {
        // The manager's private socket path (BeginWithAuthStream), here against a dbus-daemon.
        SystemdEndpoint bus = StartBus("bus");
        await using FakeSystemd systemd = await FakeSystemd.StartAsync(bus.Address);

        SystemdScope scope = Manager(bus with { Direct = true }).StartDelegatedScope(4242, TimeSpan.FromSeconds(10));

        Assert.That(scope.UnitName, Is.EqualTo(systemd.Calls.Single().Unit));
    }

    [Test]
    public void APrivateSocketConnection_SendsNothingAfterBeginUntilTheServerAnswers()
    {
        // systemd's sd-bus server leaves a message that arrives in the same read as BEGIN unprocessed
        // (systemd 252): BEGIN must be with the AUTH line, and the first message must follow the OK.
        string path = _dir.Combine("private");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen();
        var server = Task.Run(() =>
        {
            using Socket peer = listener.Accept();
            peer.ReceiveTimeout = 5000;
            var before = new List<byte>();
            var buffer = new byte[4096];
            while (!System.Text.Encoding.ASCII.GetString(before.ToArray()).EndsWith("\r\nBEGIN\r\n", StringComparison.Ordinal))
            {
                int n = peer.Receive(buffer);
                if (n == 0)
                    break;
                before.AddRange(buffer.AsSpan(0, n).ToArray());
            }
            peer.Send("OK 0123456789abcdef0123456789abcdef\r\n"u8.ToArray());
            int m = peer.Receive(buffer);
            return (Before: System.Text.Encoding.ASCII.GetString(before.ToArray()), After: buffer.AsSpan(0, m).ToArray());
        });

        Assert.Throws<SystemdUnavailableException>(() =>
            Manager(new SystemdEndpoint("unix:path=" + path, "private", path, Direct: true)).StartDelegatedScope(1, TimeSpan.FromSeconds(2)));

        var (before, after) = server.GetAwaiter().GetResult();
        string uid = Convert.ToHexStringLower(System.Text.Encoding.ASCII.GetBytes(Linux.Syscalls.EffectiveUserId.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(before, Is.EqualTo($"\0AUTH EXTERNAL {uid}\r\nBEGIN\r\n"));
        Assert.That(after, Is.Not.Empty);
        Assert.That((char)after[0], Is.EqualTo('l'), "after the OK comes a message (little-endian), not a second BEGIN");
    }

    [Test]
    public void ASocketThatNeverAnswers_IsATimeout()
    {
        // Something listens but never speaks D-Bus (a hung daemon): the run must not hang with it.
        string path = _dir.Combine("silent");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen();

        var e = Assert.Throws<SystemdUnavailableException>(() =>
            Manager(new SystemdEndpoint("unix:path=" + path, "silent", path)).StartDelegatedScope(1, TimeSpan.FromMilliseconds(500)));

        Assert.That(e!.Attempts.Single().ToString(), Is.EqualTo("silent: no answer in time"));
    }

    [Test]
    public void NoSockets_NothingIsConnectedTo()
    {
        string bus = _dir.Combine("bus"), priv = _dir.Combine("private");

        var e = Assert.Throws<SystemdUnavailableException>(() =>
            Manager(new("unix:path=" + bus, "bus", bus), new("unix:path=" + priv, "private", priv)).StartDelegatedScope(1, TimeSpan.FromSeconds(1)));

        Assert.That(e!.Attempts.Select(a => a.Error), Is.All.EqualTo("no such socket"));
        Assert.That(e.Attempts, Has.Count.EqualTo(2));
    }
}

/// <summary>systemd's Manager object as far as StartTransientUnit goes (org.freedesktop.systemd1(5)).</summary>
internal sealed class FakeSystemd : IPathMethodHandler, IAsyncDisposable
{
    public sealed record Call(string Unit, string Mode, Dictionary<string, VariantValue> Properties, int AuxiliaryUnits);

    private readonly DBusConnection _connection;
    private readonly object _gate = new();
    private uint _jobs;

    private FakeSystemd(DBusConnection connection) => _connection = connection;

    public List<Call> Calls { get; } = [];

    public HashSet<string> UnknownProperties { get; } = [];

    public string JobResult { get; set; } = "done";

    public bool EmitJobRemoved { get; set; } = true;

    /// <summary>JobRemoved signals sent (each right after its reply, as systemd does for a scope).</summary>
    public int JobsRemoved { get; private set; }

    public string Path => "/org/freedesktop/systemd1";

    public bool HandlesChildPaths => false;

    public static async Task<FakeSystemd> StartAsync(string address)
    {
        var connection = new DBusConnection(address);
        await connection.ConnectAsync();
        var fake = new FakeSystemd(connection);
        connection.AddMethodHandler(fake);
        await connection.RequestNameAsync("org.freedesktop.systemd1", RequestNameOptions.Default);
        // The library completes awaits inline on the connection's receive loop: without this, the
        // test would go on, and block in the client's synchronous call, on the fake's own loop.
        await Task.Yield();
        return fake;
    }

    public ValueTask HandleMethodAsync(MethodContext context)
    {
        Message request = context.Request;
        if (request.InterfaceAsString != "org.freedesktop.systemd1.Manager" || request.MemberAsString != "StartTransientUnit")
        {
            context.ReplyUnknownMethodError();
            return default;
        }
        Reader body = request.GetBodyReader();
        string unit = body.ReadString();
        string mode = body.ReadString();
        var properties = new Dictionary<string, VariantValue>();
        ArrayEnd end = body.ReadArrayStart(DBusType.Struct);
        while (body.HasNext(end))
        {
            body.AlignStruct();
            properties[body.ReadString()] = body.ReadVariantValue();
        }
        int aux = 0;
        ArrayEnd auxEnd = body.ReadArrayStart(DBusType.Struct);
        while (body.HasNext(auxEnd))
        {
            aux++;
            break; // never sent; counting one is enough to fail the test
        }
        lock (_gate)
            Calls.Add(new Call(unit, mode, properties, aux));

        if (UnknownProperties.FirstOrDefault(properties.ContainsKey) is string unknown)
        {
            context.ReplyError("org.freedesktop.DBus.Error.PropertyReadOnly", $"Cannot set property {unknown}, or unknown property.");
            return default;
        }
        uint id = ++_jobs;
        string job = $"/org/freedesktop/systemd1/job/{id}";
        using (MessageWriter reply = context.CreateReplyWriter("o"))
        {
            reply.WriteObjectPath(job);
            context.Reply(reply.CreateMessage());
        }
        if (EmitJobRemoved)
        {
            using MessageWriter signal = _connection.GetMessageWriter();
            signal.WriteSignalHeader(null, Path, "org.freedesktop.systemd1.Manager", "JobRemoved", "uoss");
            signal.WriteUInt32(id);
            signal.WriteObjectPath(job);
            signal.WriteString(unit);
            signal.WriteString(JobResult);
            _connection.TrySendMessage(signal.CreateMessage());
            JobsRemoved++;
        }
        return default;
    }

    public ValueTask DisposeAsync()
    {
        _connection.Dispose();
        return default;
    }
}

using System.Diagnostics;
using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Storage;

namespace Sandbox.IntegrationTests.Images;

/// <summary>
/// The image store on the real kernel as an unprivileged user: whiteouts as 0:0 character
/// devices, opaque xattrs read by a real overlay mount in a user namespace, images built by
/// umoci and skopeo (ci/make-test-images, SANDBOX_TEST_IMAGES), and separate processes importing
/// at once or killed mid-import (through `sandbox image import`).
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class ImageIntegrationTests
{
    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    // ---- whiteouts on the real kernel ------------------------------------------------------------

    [Test]
    public void WhiteoutsAreCharacterDevicesAndOverlayHonoursThem()
    {
        using var scratch = new Scratch();
        string archive = Path.Combine(scratch.Path, "img.tar");
        DockerArchive.Write(archive, ["example.com/wh:1"],
            DockerArchive.Layer(
                ("etc/", null), ("etc/deleted.conf", "gone"), ("etc/kept.conf", "kept"),
                ("opaque/", null), ("opaque/old", "old"), ("dir-to-file/", null), ("dir-to-file/x", "x")),
            DockerArchive.Layer(
                ("etc/.wh.deleted.conf", ""), ("opaque/", null), ("opaque/.wh..wh..opq", ""), ("opaque/new", "new")));
        var store = new ImageStore(Path.Combine(scratch.Path, "store"));
        ImageRecord r = store.Import(archive, null);
        string upper = r.LayerDirectories[1];

        FileStatus wh = FileSystemCalls.TryLStat(Path.Combine(upper, "etc", "deleted.conf"))!.Value;
        Assert.That(wh.IsWhiteout, Is.True, "a 0:0 character device, made by an unprivileged user (Linux >= 5.8)");
        Assert.That(FileSystemCalls.GetXattr(Path.Combine(upper, "opaque"), "user.overlay.opaque"), Is.EqualTo("y"u8.ToArray()));

        // A real overlay, read-only, in a user namespace with userxattr: what a run will see.
        Require.Command("/usr/bin/unshare");
        string merged = Directory.CreateDirectory(Path.Combine(scratch.Path, "merged")).FullName;
        string lower = string.Join(':', r.LayerDirectories.Reverse());
        string script = $"mount -t overlay overlay -o ro,userxattr,lowerdir={lower} {merged} && cd {merged} && ls etc && echo -- && ls opaque";
        var (code, output) = Run("/usr/bin/unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-c", script);
        Require.That(code == 0 || !output.Contains("permission denied", StringComparison.OrdinalIgnoreCase),
            $"overlayfs in a user namespace is not available here: {output}");
        Assert.That(code, Is.EqualTo(0), output);
        Assert.That(output.Replace("\n", " ").Trim(), Is.EqualTo("kept.conf -- new"));
    }

    // ---- images made by real tools --------------------------------------------------------------

    private static IEnumerable<string> RealToolImages() =>
        ["oci-layout", "oci-layout-zstd", "image-oci.tar", "image-oci-zstd.tar", "image-docker.tar", "image-docker.tar.gz"];

    [TestCaseSource(nameof(RealToolImages))]
    public void ImportsImagesMadeByUmociAndSkopeo(string image)
    {
        string path = TestImages.Path(image);

        using var scratch = new Scratch();
        var store = new ImageStore(Path.Combine(scratch.Path, "store"));
        ImageRecord r = store.Import(path, null);

        Assert.That(r.Layers, Has.Length.EqualTo(3));
        string[] l = [.. r.LayerDirectories];
        Assert.That(File.ReadAllText(Path.Combine(l[0], "etc", "deleted.conf")), Does.Contain("deleted in layer 2"));
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(l[0], "bin", "busybox"))!.Value.Permissions & 0x49, Is.EqualTo(0x49u), "executable");
        Assert.That(new FileInfo(Path.Combine(l[0], "bin", "sh")).LinkTarget, Is.EqualTo("busybox"));
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(l[0], "tmp"))!.Value.Permissions, Is.EqualTo(0x3FFu), "/tmp keeps 1777");
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(l[1], "etc", "deleted.conf"))!.Value.IsWhiteout, Is.True, "umoci's whiteout");
        Assert.That(FileSystemCalls.GetXattr(Path.Combine(l[2], "opaque"), "user.overlay.opaque"), Is.EqualTo("y"u8.ToArray()));
        Assert.That(File.ReadAllText(Path.Combine(l[2], "opaque", "new")), Is.EqualTo("new\n"));
        Assert.That(File.Exists(Path.Combine(l[2], "opaque", ".wh..wh..opq")), Is.False);
        Assert.That(r.Config.Env, Does.Contain("GREETING=hello"));
        Assert.That(r.Config.Cmd, Is.EqualTo(new[] { "/bin/sh", "-c", "echo hello from the image" }));
        Assert.That(r.Config.WorkingDir, Is.EqualTo("/keep"));
        Assert.That(r.Platform, Is.EqualTo(Platform.Host.ToString()));
        if (image.StartsWith("image-", StringComparison.Ordinal))
            Assert.That(r.Names.Select(ImageName.Familiar), Does.Contain("sandbox-test:latest"));
    }

    // ---- separate processes, through the CLI ----------------------------------------------------

    private static void RequireImageCommand()
    {
        CliResult help = SandboxCli.Run("image", "--help");
        Require.That(help.ExitCode == 0 && help.StdoutText.Contains("import"),
            "`sandbox image` is not registered in the CLI (Program.cs: add new ImageCommand())");
    }

    [Test]
    public void EightProcessesImportingOneTarballAllSucceedWithOneCopy()
    {
        RequireImageCommand();
        using var scratch = new Scratch();
        string archive = Path.Combine(scratch.Path, "img.tar");
        DockerArchive.Write(archive, ["example.com/many:1"],
            DockerArchive.Layer([.. Enumerable.Range(0, 2000).Select(i => ($"bulk/{i}", new string('x', 2000)))]),
            DockerArchive.Layer(("top", "top")));
        string root = Path.Combine(scratch.Path, "store");

        var processes = Enumerable.Range(0, 8).Select(i =>
        {
            var p = Process.Start(SandboxCli.StartInfo(["image", "import", archive, "--root", root, "--name", $"many:{i}"]))!;
            return (Process: p, Stdout: p.StandardOutput.ReadToEndAsync(), Stderr: p.StandardError.ReadToEndAsync());
        }).ToList();
        foreach (var (p, stdout, stderr) in processes)
        {
            Assert.That(p.WaitForExit(TimeSpan.FromSeconds(120)), Is.True, "import finished");
            Assert.That(p.ExitCode, Is.EqualTo(0), $"{stdout.Result}\n{stderr.Result}");
        }
        Assert.That(Directory.GetDirectories(Path.Combine(root, "l")), Has.Length.EqualTo(2), "one copy of each layer");
        Assert.That(Directory.GetFiles(Path.Combine(root, "images"), "*.json"), Has.Length.EqualTo(1));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(root, "tmp")), Is.Empty);
        Assert.That(new ImageStore(root).List().Single().Names, Has.Length.EqualTo(8));
        CliResult ls = SandboxCli.Run("image", "ls", "--root", root);
        Assert.That(ls.StdoutText, Does.Contain("many:7"));
    }

    [Test]
    public void KillDashNineMidImportLeavesNothingAnotherImportWouldUse()
    {
        RequireImageCommand();
        using var scratch = new Scratch();
        string archive = Path.Combine(scratch.Path, "big.tar");
        const int files = 30000;
        DockerArchive.Write(archive, ["example.com/big:1"],
            DockerArchive.Layer(("small", "first")),
            DockerArchive.Layer([.. Enumerable.Range(0, files).Select(i => ($"d{i % 100}/f{i}", "content " + i))]));
        string root = Path.Combine(scratch.Path, "store");

        using var victim = Process.Start(SandboxCli.StartInfo(["image", "import", archive, "--root", root]))!;
        string tmp = Path.Combine(root, "tmp");
        bool midway = HostProcesses.WaitUntil(() => Directory.Exists(tmp) && Directory.EnumerateDirectories(tmp)
            .Any(d => Directory.Exists(d) && SafeCount(d) > 20), TimeSpan.FromSeconds(60));
        victim.Kill(); // SIGKILL
        victim.WaitForExit();
        Assert.That(midway, Is.True, "the import got to unpacking before it was killed");

        // Whatever is under l/ is complete (it has its metadata, written before the rename), and no record exists.
        foreach (string layer in Directory.GetDirectories(Path.Combine(root, "l")))
            Assert.That(File.Exists(Path.Combine(root, "layers", Path.GetFileName(layer) + ".json")), Is.True, $"{layer} is a complete layer");
        Assert.That(Directory.GetFiles(Path.Combine(root, "images"), "*.json"), Is.Empty);
        Assert.That(new ImageStore(root).List(), Is.Empty);

        // The next import ignores the leftovers, cleans them, and ends with the whole image.
        CliResult again = SandboxCli.Run(["image", "import", archive, "--root", root], limit: TimeSpan.FromSeconds(120));
        Assert.That(again.ExitCode, Is.EqualTo(0), again.ToString());
        ImageRecord r = new ImageStore(root).Get("example.com/big:1");
        int count = Directory.EnumerateFiles(r.LayerDirectories[1], "*", SearchOption.AllDirectories).Count();
        Assert.That(count, Is.EqualTo(files));
        Assert.That(Directory.EnumerateFileSystemEntries(tmp), Is.Empty, "the killed import's work was removed");

        CliResult inspect = SandboxCli.Run("image", "inspect", "example.com/big:1", "--root", root);
        Assert.That(inspect.ExitCode, Is.EqualTo(0), inspect.ToString());
        Assert.That(JsonNode.Parse(inspect.StdoutText)!["layers"]!.AsArray(), Has.Count.EqualTo(2));
        Assert.That(SandboxCli.Run("image", "rm", "example.com/big:1", "--root", root).ExitCode, Is.EqualTo(0));
        CliResult prune = SandboxCli.Run("image", "prune", "--root", root);
        Assert.That(prune.StdoutText, Does.Contain("Deleted 2 layer(s)"), prune.ToString());
        Assert.That(Directory.GetDirectories(Path.Combine(root, "l")), Is.Empty);
    }

    /// <summary>
    /// A gzip tarball missing its last 8 bytes (the trailer: CRC-32 and length) is refused by the
    /// CLI, as `gzip -t` and docker load refuse it: GZipStream reads such a file as complete unless
    /// the CLI's runtime configuration turns on its strict validation.
    /// </summary>
    [Test]
    public void ATarballCutShortIsRefusedAndNamedAsCut()
    {
        RequireImageCommand();
        using var scratch = new Scratch();
        string cut = CutGzipArchive(scratch.Path);
        string root = Path.Combine(scratch.Path, "store");
        CliResult r = SandboxCli.Run("image", "import", cut, "--root", root);
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain($"{cut}: the gzip data ends early: the file was cut short"), r.ToString());
        Assert.That(new ImageStore(root).List(), Is.Empty);
    }

    /// <summary>
    /// The CLI reads an archive from a pipe (`image import /dev/stdin`, as `docker load` reads its
    /// stdin); an archive, or a layout's directory, the caller may not read is named as that
    /// (SBX034), not as a failure of the store (SBX030) nor as missing (SBX023).
    /// </summary>
    [Test]
    public void AnArchiveFromAPipeIsImportedAndOneTheCallerCannotReadIsNamed()
    {
        RequireImageCommand();
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        string archive = Path.Combine(scratch.Path, "piped.tar");
        DockerArchive.Write(archive, ["example.com/piped:1"], DockerArchive.Layer(("file", "content")));
        CliResult piped = SandboxCli.Shell($"cat '{archive}' | '{SandboxCli.Binary}' image import --root '{store}' /dev/stdin");
        Assert.That(piped.ExitCode, Is.EqualTo(0), piped.ToString());
        Assert.That(new ImageStore(store).Find("example.com/piped:1"), Is.Not.Null);

        FileSystemCalls.ChangeModeAt(archive, 0);
        CliResult unreadable = SandboxCli.Run("image", "import", "--root", store, archive);
        Assert.That(unreadable.ExitCode, Is.EqualTo(125), unreadable.ToString());
        Assert.That(unreadable.Stderr, Is.EqualTo($"sandbox: SBX034 {archive}: permission denied: you cannot read it (or search a directory above it); make it readable by you, or copy it somewhere you can read\n"));

        string closed = Directory.CreateDirectory(Path.Combine(scratch.Path, "closed")).FullName;
        string layout = Directory.CreateDirectory(Path.Combine(closed, "layout")).FullName;
        FileSystemCalls.ChangeModeAt(closed, 0);
        CliResult hidden = SandboxCli.Run("image", "import", "--root", store, layout);
        FileSystemCalls.ChangeModeAt(closed, 0x1C0);
        Assert.That(hidden.Stderr, Does.StartWith($"sandbox: SBX034 {layout}: permission denied"), hidden.ToString());
    }

    /// <summary>A gzip-compressed docker archive in <paramref name="dir"/> with its 8-byte gzip trailer cut off.</summary>
    internal static string CutGzipArchive(string dir)
    {
        string tar = Path.Combine(dir, "whole.tar");
        DockerArchive.Write(tar, ["example.com/cut:1"], DockerArchive.Layer(("file", "content")));
        var gz = new MemoryStream();
        using (var z = new System.IO.Compression.GZipStream(gz, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
            z.Write(File.ReadAllBytes(tar));
        string cut = Path.Combine(dir, "cut.tar.gz");
        File.WriteAllBytes(cut, gz.ToArray()[..^8]);
        return cut;
    }

    private static int SafeCount(string dir)
    {
        try
        {
            return Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Take(1000).Count();
        }
        catch (IOException)
        {
            return 0;
        }
        catch (UnauthorizedAccessException)
        {
            return 0;
        }
    }

    private static (int Code, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }
}

/// <summary>A scratch directory removed with the store's remover (layers have read-only directories).</summary>
internal sealed class Scratch : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("sandbox-it-img-").FullName;

    public void Dispose() => TreeRemover.Remove(Path);
}

/// <summary>docker save's layout, written with the BCL's tar writer: HEX.json, HEX/layer.tar, manifest.json.</summary>
internal static class DockerArchive
{
    /// <summary>A layer tar; a null content makes a directory.</summary>
    public static byte[] Layer(params (string Name, string? Content)[] entries)
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (var (name, content) in entries)
            {
                w.WriteEntry(content is null
                    ? new PaxTarEntry(TarEntryType.Directory, name) { Mode = (UnixFileMode)0x1ED }
                    : new PaxTarEntry(TarEntryType.RegularFile, name) { Mode = (UnixFileMode)0x1A4, DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)) });
            }
        }
        return ms.ToArray();
    }

    public static void Write(string path, string[] tags, params byte[][] layers)
    {
        static string Hex(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));
        byte[] config = Encoding.UTF8.GetBytes(new JsonObject
        {
            ["architecture"] = Platform.Host.Architecture,
            ["os"] = "linux",
            ["config"] = new JsonObject { ["Cmd"] = new JsonArray("/bin/sh") },
            ["rootfs"] = new JsonObject { ["type"] = "layers", ["diff_ids"] = new JsonArray([.. layers.Select(l => (JsonNode)("sha256:" + Hex(l)))]) },
        }.ToJsonString());
        using FileStream fs = File.Create(path);
        using var w = new TarWriter(fs, TarEntryFormat.Pax);
        void Add(string name, byte[] content) =>
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, name) { Mode = (UnixFileMode)0x1A4, DataStream = new MemoryStream(content) });
        Add(Hex(config) + ".json", config);
        foreach (byte[] layer in layers)
            Add(Hex(layer) + "/layer.tar", layer);
        Add("manifest.json", Encoding.UTF8.GetBytes(new JsonArray(new JsonObject
        {
            ["Config"] = Hex(config) + ".json",
            ["RepoTags"] = new JsonArray([.. tags.Select(t => (JsonNode)t)]),
            ["Layers"] = new JsonArray([.. layers.Select(l => (JsonNode)(Hex(l) + "/layer.tar"))]),
        }).ToJsonString()));
    }
}

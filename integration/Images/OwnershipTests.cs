using System.Diagnostics;
using System.Formats.Tar;
using System.Text;
using System.Text.Json.Nodes;
using Sandbox.Identity;
using Sandbox.Images;
using Sandbox.Linux;
using Sandbox.Runtime;
using Sandbox.Storage;

namespace Sandbox.IntegrationTests.Images;

/// <summary>
/// Layer files keep their image's owners under the caller's subordinate range, for real: an image
/// whose layer has files of 1000:1000, 33:33 and 0:42, a setuid and a setuid+setgid file of a
/// non-root user (chown clears those bits: they must come back), a 0700 directory of 1000, a hard
/// link and a symlink, a fifo. A <c>--userns subuid</c> sandbox must show exactly those owners and
/// modes; the host sees subuid start + id - 1; the store removes it all again (image rm, prune, a
/// killed import's leftovers), though the caller alone could not.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class OwnershipTests
{
    private const string Busybox = "/bin/busybox";
    private IdMapping _map = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        Require.Unprivileged();
        IdMapPlan plan = Require.SubordinateRange(); // owners are kept only with a subordinate range
        Require.Command(Busybox);
        _map = IdMapping.Of(plan)!;
    }

    private static uint Caller => Syscalls.RealUserId;

    /// <summary>Imports <see cref="WriteImage"/>'s image into a fresh store under <paramref name="scratch"/>; the import must succeed.</summary>
    private static (string Store, CliResult Import) ImportOwned(Scratch scratch, params string[] options)
    {
        string store = Path.Combine(scratch.Path, "store");
        CliResult import = SandboxCli.Run(["image", "import", "--root", store, .. options, WriteImage(scratch.Path)]);
        Assert.That(import.ExitCode, Is.EqualTo(0), import.ToString());
        return (store, import);
    }

    /// <summary>The image: busybox, then a layer of owned files.</summary>
    private static string WriteImage(string dir, string tag = "example.com/owned:1", params byte[][] extraLayers)
    {
        string path = Path.Combine(dir, "owned.tar");
        DockerArchive.Write(path, [tag], [BusyboxLayer(), OwnedLayer(), .. extraLayers]);
        return path;
    }

    private static byte[] BusyboxLayer()
    {
        var layer = new LayerTar().Dir("bin").File("bin/busybox", File.ReadAllBytes(Busybox), 0x1ED);
        foreach (string applet in new[] { "sh", "stat", "ls", "cat", "id", "echo", "sort", "wc", "readlink", "true" })
            layer.Symlink("bin/" + applet, "busybox");
        return layer.Build();
    }

    private static byte[] OwnedLayer() => new LayerTar()
        .Dir("home")
        .Dir("home/user", 0x1C0, 1000, 1000)                          // 0700
        .File("home/user/secret", "secret of 1000\n", 0x180, 1000, 1000) // 0600
        .Dir("usr").Dir("usr/bin")
        .File("usr/bin/su", "#!/bin/sh\n", 0x9ED)                     // 04755 root's
        .File("usr/bin/tool", "#!/bin/sh\n", 0xDED, 1000, 1000)        // 06755 of 1000: chown clears both bits
        .HardLink("usr/bin/tool-hard", "usr/bin/tool")
        .Symlink("usr/bin/tool-sym", "tool", 1000, 1000)
        .Dir("srv", 0x5FD, 33, 33)                                      // 02775
        .File("srv/www", "www\n", 0x1A0, 33, 33)                        // 0640
        .FileWithXattr("srv/pub", "pub\n", 0x1A4, 33, 33, "user.note", "kept through the chown")
        .Dir("etc")
        .File("etc/shadow", "root:*:1::::::\n", 0x1A0, 0, 42)           // 0640 root:shadow
        .Dir("run")
        .Fifo("run/fifo", 0x190, 1000, 1000)                            // 0620
        .Build();

    private static readonly string[] Expected =
    [
        "1000:1000 700 directory /home/user",
        "1000:1000 600 regular file /home/user/secret",
        "0:0 4755 regular file /usr/bin/su",
        "1000:1000 6755 regular file /usr/bin/tool",
        "1000:1000 6755 regular file /usr/bin/tool-hard",
        "1000:1000 777 symbolic link /usr/bin/tool-sym",
        "33:33 2775 directory /srv",
        "33:33 640 regular file /srv/www",
        "0:42 640 regular file /etc/shadow",
        "1000:1000 620 fifo /run/fifo",
    ];

    private static readonly string[] StatArgs =
        ["stat", "-c", "%u:%g %a %F %n", "/home/user", "/home/user/secret", "/usr/bin/su", "/usr/bin/tool", "/usr/bin/tool-hard",
         "/usr/bin/tool-sym", "/srv", "/srv/www", "/etc/shadow", "/run/fifo"];

    private static string[] Lines(CliResult r) => r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Test]
    public void ASubuidSandboxShowsExactlyTheImagesOwnersAndModes()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        string image = WriteImage(scratch.Path);

        CliResult r = SandboxCli.Run(["run", "--root", store, "--userns", "subuid", image, .. StatArgs]);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(Expected), r.ToString());
        Assert.That(r.Stderr, Does.Not.Contain("flattened"), "nothing was lost");

        // One inode for the hard link; the symlink's own owner; and the owner really owns its files.
        CliResult links = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "example.com/owned:1", "sh", "-c",
            "stat -c '%i %h' /usr/bin/tool /usr/bin/tool-hard | sort -u | wc -l; stat -c %h /usr/bin/tool; readlink /usr/bin/tool-sym");
        Assert.That(Lines(links), Is.EqualTo(new[] { "1", "2", "tool" }), links.ToString());
        CliResult asUser = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "-u", "1000:1000", "example.com/owned:1",
            "sh", "-c", "cat /home/user/secret; id -u; cat /srv/www 2>/dev/null || echo www-refused");
        Assert.That(Lines(asUser), Is.EqualTo(new[] { "secret of 1000", "1000", "www-refused" }), asUser.ToString());
        CliResult asRootOfUserns = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "example.com/owned:1", "cat", "/home/user/secret");
        Assert.That(asRootOfUserns.StdoutText, Is.EqualTo("secret of 1000\n"), "root inside may read it (CAP_DAC_OVERRIDE over mapped owners)");

        // On the host: subuid start + id - 1, the image's root is the caller.
        ImageRecord record = new ImageStore(store).Get("example.com/owned:1");
        string layer = record.LayerDirectories[1];
        long Host(long id) => _map.ToHostUid(id)!.Value;
        FileStatus home = FileSystemCalls.TryLStat(Path.Combine(layer, "home", "user"))!.Value;
        Assert.That((long)home.Uid, Is.EqualTo(Host(1000)));
        Assert.That(home.Permissions, Is.EqualTo(0x1C0u));
        FileStatus tool = FileSystemCalls.TryLStat(Path.Combine(layer, "usr", "bin", "tool"))!.Value;
        Assert.That((long)tool.Uid, Is.EqualTo(Host(1000)));
        Assert.That(tool.Permissions, Is.EqualTo(0xDEDu), "setuid and setgid put back after the chown");
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(layer, "usr", "bin", "su"))!.Value.Uid, Is.EqualTo(Caller));
        Assert.That((long)FileSystemCalls.TryLStat(Path.Combine(layer, "srv"))!.Value.Uid, Is.EqualTo(Host(33)));
        Assert.That((long)FileSystemCalls.TryLStat(Path.Combine(layer, "srv", "pub"))!.Value.Uid, Is.EqualTo(Host(33)));
        Assert.That(FileSystemCalls.GetXattr(Path.Combine(layer, "srv", "pub"), "user.note"), Is.EqualTo("kept through the chown"u8.ToArray()));
        Assert.Throws<LinuxException>(() => FileSystemCalls.TryLStat(Path.Combine(layer, "home", "user", "secret")),
            "the caller itself cannot even look into 1000's 0700 directory");
        Assert.That(record.OwnershipFlattened, Is.False);
        Assert.That(record.IdMap, Is.EqualTo(_map));
        Assert.That(record.Layers[0].Ownership.Kind, Is.EqualTo(LayerOwnershipKind.Flattened), "busybox has only root's files: stored once for every map");
        Assert.That(record.Layers[1].Ownership.NonRootEntries, Is.EqualTo(10), "the link counts under both names");

        CliResult inspect = SandboxCli.Run("image", "inspect", "--root", store, "example.com/owned:1");
        JsonNode owners = JsonNode.Parse(inspect.StdoutText)!["layers"]![1]!["owners"]!;
        Assert.That(owners["kind"]!.GetValue<string>(), Is.EqualTo("mapped"));
        Assert.That(owners["idMap"]!["uidStart"]!.GetValue<long>(), Is.EqualTo(_map.Uids.Start));

        TestContext.Progress.WriteLine("inside (--userns subuid):\n  " + string.Join("\n  ", Lines(r)));
        TestContext.Progress.WriteLine($"on the host: /home/user {home.Uid} {Convert.ToString(home.Permissions, 8)}, /usr/bin/tool {tool.Uid} {Convert.ToString(tool.Permissions, 8)}");
    }

    [Test]
    public void EightProcessesImportingAnOwnedImageEndWithOneCopyOfEachLayer()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        string image = WriteImage(scratch.Path);
        var processes = Enumerable.Range(0, 8).Select(i =>
        {
            var p = Process.Start(SandboxCli.StartInfo(["image", "import", image, "--root", store, "--name", $"owned:{i}"]))!;
            return (Process: p, Stdout: p.StandardOutput.ReadToEndAsync(), Stderr: p.StandardError.ReadToEndAsync());
        }).ToList();
        foreach (var (p, stdout, stderr) in processes)
        {
            Assert.That(p.WaitForExit(TimeSpan.FromSeconds(120)), Is.True, "import finished");
            Assert.That(p.ExitCode, Is.EqualTo(0), $"{stdout.Result}\n{stderr.Result}");
        }
        Assert.That(Directory.GetDirectories(Path.Combine(store, "l")), Has.Length.EqualTo(2), "busybox flattened once, the owned layer once for this map");
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store, "tmp")), Is.Empty);
        CliResult r = SandboxCli.Run(["run", "--root", store, "--userns", "subuid", "owned:5", .. StatArgs]);
        Assert.That(Lines(r), Is.EqualTo(Expected), r.ToString());
    }

    [Test]
    public void ASingleIdRunShowsOtherOwnersAsNobodyAndSaysSo()
    {
        using var scratch = new Scratch();
        (string store, _) = ImportOwned(scratch);
        CliResult r = SandboxCli.Run("run", "--root", store, "--userns", "single", "example.com/owned:1", "stat", "-c", "%u:%g %n", "/home/user", "/usr/bin/su", "/etc/shadow");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "65534:65534 /home/user", "0:0 /usr/bin/su", "0:65534 /etc/shadow" }));
        Assert.That(r.Stderr, Does.Contain("show as nobody (65534)").And.Contain("--userns subuid"));
    }

    [Test]
    public void ImportingWithUsernsSingleFlattensOwnersAndSaysSo()
    {
        using var scratch = new Scratch();
        (string store, CliResult import) = ImportOwned(scratch, "--userns", "single");
        Assert.That(import.Stderr, Does.Contain("owners flattened to you (10 file(s) belong to other users").And.Contain("--userns single"));
        CliResult r = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "example.com/owned:1", "stat", "-c", "%u:%g %a %n", "/home/user", "/usr/bin/tool");
        Assert.That(Lines(r), Is.EqualTo(new[] { "0:0 700 /home/user", "0:0 6755 /usr/bin/tool" }), r.ToString());
        Assert.That(JsonNode.Parse(SandboxCli.Run("image", "inspect", "--root", store, "example.com/owned:1").StdoutText)!["ownershipFlattened"]!.GetValue<bool>(), Is.True);
    }

    [Test]
    public void ImageRmAndPruneLeaveNothingOnDisk()
    {
        using var scratch = new Scratch();
        (string store, _) = ImportOwned(scratch);
        Assert.That(SandboxCli.Run("run", "--root", store, "example.com/owned:1", "true").ExitCode, Is.EqualTo(0));
        string owned = new ImageStore(store).Get("example.com/owned:1").LayerDirectories[1];
        Assert.Throws<UnauthorizedAccessException>(() => Directory.Delete(Path.Combine(owned, "home", "user"), recursive: true),
            "what the store holds now, the caller alone cannot remove");

        Assert.That(SandboxCli.Run("image", "rm", "--root", store, "example.com/owned:1").ExitCode, Is.EqualTo(0));
        CliResult prune = SandboxCli.Run("image", "prune", "--root", store);
        Assert.That(prune.ExitCode, Is.EqualTo(0), prune.ToString());
        Assert.That(prune.StdoutText, Does.StartWith("Deleted 2 layer(s)"), prune.ToString());

        foreach (string sub in new[] { "l", "layers", "tmp", "images" })
            Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store, sub)), Is.Empty, sub);
        foreach (string entry in Directory.EnumerateFileSystemEntries(store, "*", SearchOption.AllDirectories))
            Assert.That(FileSystemCalls.TryLStat(entry)!.Value.Uid, Is.EqualTo(Caller), entry);
        Directory.Delete(store, recursive: true); // the caller's own again, all of it
    }

    [Test]
    public void DeepTreesOfOtherOwnersAreRemovedAndWithoutARangeTheErrorSaysHow()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        // 1000 nested 0700 directories of 1000:1000 (a 2000-byte name): the native removal keeps one
        // directory open at a time, whatever the depth.
        var deep = new LayerTar();
        string path = "";
        for (int i = 0; i < 1000; i++)
        {
            path = path.Length == 0 ? "d" : path + "/d";
            deep.Dir(path, 0x1C0, 1000, 1000);
        }
        deep.File(path + "/bottom", "x", 0x180, 1000, 1000);
        string image = WriteImage(scratch.Path, "example.com/owned:deep", deep.Build());
        CliResult import = SandboxCli.Run("image", "import", "--root", store, image);
        Assert.That(import.ExitCode, Is.EqualTo(0), import.ToString());
        CliResult bottom = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "example.com/owned:deep", "stat", "-c", "%u:%g %a", "/" + path + "/bottom");
        Assert.That(bottom.StdoutText, Is.EqualTo("1000:1000 600\n"), bottom.ToString());

        string layer = new ImageStore(store).Get("example.com/owned:deep").LayerDirectories[2];
        string victim = Path.Combine(scratch.Path, "victim");
        FileSystemCalls.Rename(layer, victim); // (the store's record is of no further interest here)
        var noRange = new IdentityEnvironment(Caller, Syscalls.RealGroupId, Environment.UserName,
            Path.Combine(scratch.Path, "no-subuid"), Path.Combine(scratch.Path, "no-subgid"));
        var e = Assert.Throws<SandboxException>(() => TreeRemover.Remove(victim, () => noRange))!;
        Assert.That(e.Message, Does.Contain("there is none now").And.Contain("sudo rm -rf " + victim));
        Assert.That(Directory.Exists(Path.Combine(victim, "d")), Is.True, "nothing of 1000's was removed");

        long bytes = TreeRemover.Remove(victim);
        Assert.That(Directory.Exists(victim), Is.False);
        Assert.That(bytes, Is.EqualTo(1), "the one byte of the bottom file, counted by the native removal");
    }

    [Test]
    public void AKilledImportLeavesNothingALaterRunUsesAndTheNextImportCleansIt()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        const int files = 30000;
        // The owned layer is unpacked and chowned first, then waits in tmp/ while the big one unpacks.
        var big = new LayerTar();
        for (int i = 0; i < files; i++)
            big.File($"bulk/d{i % 100}/f{i}", "content " + i, 0x1A4);
        string image = WriteImage(scratch.Path, "example.com/owned:big", big.Build());

        using var victim = Process.Start(SandboxCli.StartInfo(["image", "import", "--root", store, image]))!;
        string tmp = Path.Combine(store, "tmp");
        bool chowned = HostProcesses.WaitUntil(() => OwnedWorkIn(tmp) is not null, TimeSpan.FromSeconds(60));
        victim.Kill(); // SIGKILL
        victim.WaitForExit();
        Assert.That(chowned, Is.True, "the import got to giving the owned layer its owners before it was killed");

        string leftover = OwnedWorkIn(tmp)!;
        Assert.Throws<UnauthorizedAccessException>(() => Directory.Delete(Path.Combine(leftover, "home", "user"), recursive: true),
            "the caller alone cannot remove it");
        Assert.That(new ImageStore(store).List(), Is.Empty);
        foreach (string layer in Directory.GetDirectories(Path.Combine(store, "l")))
            Assert.That(File.Exists(Path.Combine(store, "layers", Path.GetFileName(layer) + ".json")), Is.True, $"{layer} is complete");
        CliResult notThere = SandboxCli.Run("run", "--root", store, "example.com/owned:big", "true");
        Assert.That(notThere.ExitCode, Is.Not.EqualTo(0), "no image was recorded");

        CliResult again = SandboxCli.Run(["image", "import", "--root", store, image], limit: TimeSpan.FromSeconds(180));
        Assert.That(again.ExitCode, Is.EqualTo(0), again.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(tmp), Is.Empty, "the killed import's work, subuid-owned files included, was removed");
        CliResult r = SandboxCli.Run(["run", "--root", store, "--userns", "subuid", "example.com/owned:big", .. StatArgs]);
        Assert.That(Lines(r), Is.EqualTo(Expected), r.ToString());
    }

    /// <summary>A work directory under tmp/ whose home/user already belongs to a subordinate id.</summary>
    private string? OwnedWorkIn(string tmp)
    {
        if (!Directory.Exists(tmp))
            return null;
        foreach (string dir in Directory.EnumerateDirectories(tmp))
        {
            try
            {
                if (FileSystemCalls.TryLStat(Path.Combine(dir, "home", "user")) is { } st && st.Uid != Caller)
                    return dir;
            }
            catch (LinuxException)
            {
            }
        }
        return null;
    }

    [Test]
    public void LayersWrittenForAnotherRangeFailTheRunWithTheFix()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        Assert.That(SandboxCli.Run("image", "import", "--root", store, WriteImage(scratch.Path)).ExitCode, Is.EqualTo(0));
        // What /etc/subuid changing under the store looks like to a run: the record's map is not the run's.
        string recordFile = Directory.GetFiles(Path.Combine(store, "images"), "*.json").Single();
        JsonObject json = JsonNode.Parse(File.ReadAllText(recordFile))!.AsObject();
        json["layers"]![1]!["owners"]!["uidStart"] = _map.Uids.Start + 1000000;
        File.WriteAllText(recordFile, json.ToJsonString());

        CliResult r = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "example.com/owned:1", "true");
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain("its layers keep their owners for the subordinate range").And.Contain("Import the image again"));
    }

    // ---- the copy storage driver: root of a user namespace with the layers' map copies them -------

    [Test]
    public void TheCopyDriverShowsTheSameOwnersModesLinksAndXattrsAsOverlay()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        string image = WriteImage(scratch.Path);

        CliResult r = SandboxCli.Run(["run", "--root", store, "--userns", "subuid", "--storage-driver", "copy", image, .. StatArgs]);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(Expected), r.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store, "tmp")), Is.Empty, "the copy, files of 1000 and 33 included, is gone after the run");

        CliResult links = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "--storage-driver", "copy", "-u", "1000:1000", "example.com/owned:1", "sh", "-c",
            "stat -c '%i %h' /usr/bin/tool /usr/bin/tool-hard | sort -u | wc -l; readlink /usr/bin/tool-sym; cat /home/user/secret; cat /srv/www 2>/dev/null || echo www-refused");
        Assert.That(Lines(links), Is.EqualTo(new[] { "1", "tool", "secret of 1000", "www-refused" }), links.ToString());

        // Kept, the copy is on the host as the layer is: subuid start + id - 1, modes and xattrs kept.
        CliResult kept = SandboxCli.Run("run", "--root", store, "--userns", "subuid", "--storage-driver", "copy", "--keep", "example.com/owned:1", "true");
        Assert.That(kept.ExitCode, Is.EqualTo(0), kept.ToString());
        var match = System.Text.RegularExpressions.Regex.Match(kept.Stderr, "the root's changes are kept in (\\S+)");
        Assert.That(match.Success, Is.True, kept.Stderr);
        string root = match.Groups[1].Value;
        long Host(long id) => _map.ToHostUid(id)!.Value;
        FileStatus home = FileSystemCalls.TryLStat(Path.Combine(root, "home", "user"))!.Value;
        Assert.That(((long)home.Uid, (long)home.Gid, home.Permissions), Is.EqualTo((Host(1000), _map.ToHostGid(1000)!.Value, 0x1C0u)));
        FileStatus tool = FileSystemCalls.TryLStat(Path.Combine(root, "usr", "bin", "tool"))!.Value;
        Assert.That(((long)tool.Uid, tool.Permissions), Is.EqualTo((Host(1000), 0xDEDu)), "setuid and setgid set again after the chown");
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(root, "usr", "bin", "tool-hard"))!.Value.Inode, Is.EqualTo(tool.Inode));
        Assert.That(FileSystemCalls.GetXattr(Path.Combine(root, "srv", "pub"), "user.note"), Is.EqualTo("kept through the chown"u8.ToArray()));
        Assert.That(FileSystemCalls.TryLStat(Path.Combine(root, "run", "fifo"))!.Value.Permissions, Is.EqualTo(0x190u), "0620, whatever the umask");
        Assert.That(FileSystemCalls.TryLStat(root)!.Value.Uid, Is.EqualTo(Caller), "the root directory is the image's root's: the caller's");
    }

    [Test]
    public void ASingleIdRunWithTheCopyDriverShowsOtherOwnersAsNobodyAsOverlayDoes()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        Assert.That(SandboxCli.Run("image", "import", "--root", store, WriteImage(scratch.Path)).ExitCode, Is.EqualTo(0));
        CliResult r = SandboxCli.Run("run", "--root", store, "--userns", "single", "--storage-driver", "copy", "example.com/owned:1",
            "stat", "-c", "%u:%g %n", "/home/user", "/usr/bin/su", "/etc/shadow");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "65534:65534 /home/user", "0:0 /usr/bin/su", "0:65534 /etc/shadow" }), r.ToString());
        Assert.That(r.Stderr, Does.Contain("show as nobody (65534)"));
        Assert.That(Directory.EnumerateFileSystemEntries(Path.Combine(store, "tmp")), Is.Empty);
    }

    [Test]
    public void TheCopyOfAKilledCliIsRemovedByTheNextPrune()
    {
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        Assert.That(SandboxCli.Run("image", "import", "--root", store, WriteImage(scratch.Path)).ExitCode, Is.EqualTo(0));
        string marker = "copy-killed-" + Guid.NewGuid().ToString("N")[..8];
        using var victim = Process.Start(SandboxCli.StartInfo(["run", "--root", store, "--userns", "subuid", "--storage-driver", "copy", "example.com/owned:1",
            "sh", "-c", $"echo ready; sleep 60; : {marker}"]))!;
        Assert.That(victim.StandardOutput.ReadLine(), Is.EqualTo("ready"));
        string tmp = Path.Combine(store, "tmp");
        string work = Directory.EnumerateDirectories(tmp).Single();
        FileStatus home = FileSystemCalls.TryLStat(Path.Combine(work, "root", "home", "user"))!.Value;
        Assert.That((long)home.Uid, Is.EqualTo(_map.ToHostUid(1000)), "the run's copy holds files of a subordinate id");
        victim.Kill(); // SIGKILL: no clean-up of its own
        victim.WaitForExit();
        Assert.That(HostProcesses.WaitUntil(() => HostProcesses.WithMarker(marker).Count == 0, TimeSpan.FromSeconds(10)), Is.True, "the sandbox died with the CLI");
        Assert.That(Directory.Exists(work), Is.True, "left behind");

        CliResult prune = SandboxCli.Run("image", "prune", "--root", store);
        Assert.That(prune.ExitCode, Is.EqualTo(0), prune.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(tmp), Is.Empty, "the killed run's copy, files of 1000 included, was removed");
    }

    // ---- images made by real tools (ci/make-test-images: layer 3 has /home/user of 1000:1000) -----

    private static IEnumerable<string> RealToolImages() =>
        ["oci-layout", "oci-layout-zstd", "image-oci.tar", "image-oci-zstd.tar", "image-docker.tar", "image-docker.tar.gz"];

    [TestCaseSource(nameof(RealToolImages))]
    public void ImagesMadeByUmociAndSkopeoKeepTheirOwners(string name)
    {
        string path = TestImages.Path(name);
        using var scratch = new Scratch();
        string store = Path.Combine(scratch.Path, "store");
        CliResult r = SandboxCli.Run("run", "--root", store, "--userns", "subuid", path, "stat", "-c", "%u:%g %a %n", "/home", "/home/user", "/home/user/notes.txt", "/keep/kept");
        Require.That(!r.Stderr.Contains("No such file"), $"{path} predates /home/user in ci/make-test-images: make the images again");
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(Lines(r), Is.EqualTo(new[] { "0:0 755 /home", "1000:1000 700 /home/user", "1000:1000 640 /home/user/notes.txt", "0:0 644 /keep/kept" }), r.ToString());
    }
}

/// <summary>A layer tar with owners, modes, links and fifos, written with the BCL's tar writer.</summary>
internal sealed class LayerTar
{
    private static readonly DateTimeOffset Time = new(2024, 1, 2, 3, 4, 5, TimeSpan.Zero);
    private readonly List<PaxTarEntry> _entries = [];

    private LayerTar Add(TarEntryType type, string name, int mode, int uid, int gid, Action<PaxTarEntry>? more = null, Dictionary<string, string>? pax = null)
    {
        var e = new PaxTarEntry(type, name, pax ?? []) { Mode = (UnixFileMode)mode, Uid = uid, Gid = gid, ModificationTime = Time };
        more?.Invoke(e);
        _entries.Add(e);
        return this;
    }

    public LayerTar Dir(string name, int mode = 0x1ED, int uid = 0, int gid = 0) => Add(TarEntryType.Directory, name, mode, uid, gid);

    public LayerTar File(string name, string content, int mode = 0x1A4, int uid = 0, int gid = 0) =>
        File(name, Encoding.UTF8.GetBytes(content), mode, uid, gid);

    public LayerTar File(string name, byte[] content, int mode = 0x1A4, int uid = 0, int gid = 0) =>
        Add(TarEntryType.RegularFile, name, mode, uid, gid, e => e.DataStream = new MemoryStream(content));

    /// <summary>A file with a <c>user.*</c> extended attribute (a PAX SCHILY.xattr record, as GNU tar writes it).</summary>
    public LayerTar FileWithXattr(string name, string content, int mode, int uid, int gid, string xattr, string value) =>
        Add(TarEntryType.RegularFile, name, mode, uid, gid, e => e.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)),
            new Dictionary<string, string> { ["SCHILY.xattr." + xattr] = value });

    public LayerTar Symlink(string name, string target, int uid = 0, int gid = 0) =>
        Add(TarEntryType.SymbolicLink, name, 0x1FF, uid, gid, e => e.LinkName = target);

    public LayerTar HardLink(string name, string target) => Add(TarEntryType.HardLink, name, 0x1A4, 0, 0, e => e.LinkName = target);

    public LayerTar Fifo(string name, int mode, int uid, int gid) => Add(TarEntryType.Fifo, name, mode, uid, gid);

    public byte[] Build()
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (PaxTarEntry e in _entries)
                w.WriteEntry(e);
        }
        return ms.ToArray();
    }
}

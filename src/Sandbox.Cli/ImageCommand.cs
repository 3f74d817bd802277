using Sandbox.Cli.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Sandbox.Images;
using Sandbox.Storage;

namespace Sandbox.Cli;

/// <summary>
/// <c>sandbox image import FILE [--name NAME] | ls | inspect NAME | rm NAME... | prune</c>: the
/// image store (docker archives, OCI archives and layouts). <c>--root DIR</c> (or SANDBOX_ROOT)
/// chooses the store; the default is $XDG_DATA_HOME/sandbox or ~/.local/share/sandbox.
/// </summary>
internal sealed class ImageCommand : Command
{
    private readonly Option<string?> _root = StoreOption.Create(recursive: true);

    public ImageCommand() : base("image", "Manage images: import docker and OCI archives, list, inspect, remove, prune")
    {
        Options.Add(_root);
        Subcommands.Add(Import());
        Subcommands.Add(List());
        Subcommands.Add(Inspect());
        Subcommands.Add(Remove());
        Subcommands.Add(Prune());
    }

    private ImageStore Store(ParseResult parse) => new(StoreLocation.Resolve(parse.GetValue(_root)));

    private Command Import()
    {
        var file = new Argument<string>("FILE") { Description = "A docker save tarball, an OCI archive (.tar, optionally gzip or zstd compressed) or an OCI layout directory" };
        var name = new Option<string?>("--name") { Description = "Name the image (REPO[:TAG]); default: the names the archive gives", HelpName = "NAME" };
        var platform = new Option<string?>("--platform") { Description = "From a multi-platform image, import OS/ARCH[/VARIANT] (default: this host's)", HelpName = "OS/ARCH" };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Print only the image digest" };
        var userns = new Option<string>("--userns")
        {
            Description = "File owners: auto (kept under your subuid range when you have one, else yours), subuid (kept; fail without a range), single (every file yours)",
            DefaultValue = "auto",
        };
        var command = new Command("import", "Import an image from a docker archive, an OCI archive or an OCI layout directory") { file, name, platform, quiet, userns };
        command.SetAction(parse => Guarded(() =>
        {
            ImageStore store = Store(parse);
            bool q = parse.GetValue(quiet);
            ImportOwnership ownership = ImportOwnership.Resolve(SandboxOptions.ParseUserNamespace(parse.GetValue(userns)), Identity.IdentityEnvironment.Current());
            ImageRecord record = ImportProgressView.Run(!q && !Console.IsErrorRedirected,
                progress => store.Import(parse.GetValue(file)!, parse.GetValue(name), progress, parse.GetValue(platform), ownership));
            if (q)
            {
                Console.Out.WriteLine(record.Digest);
            }
            else
            {
                foreach (string n in record.Names.IsDefaultOrEmpty ? [record.Digest] : record.Names)
                    Console.Out.WriteLine($"Loaded image: {n} ({ShortDigest(record.Digest)}, {record.Layers.Length} layers, {Size(record.Size)})");
            }
            return 0;
        }));
        return command;
    }

    private Command List()
    {
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Print only digests" };
        var command = new Command("ls", "List the images in the store") { quiet };
        command.Aliases.Add("list");
        command.SetAction(parse => Guarded(() =>
        {
            IReadOnlyList<ImageRecord> images = Store(parse).List();
            if (parse.GetValue(quiet))
            {
                foreach (ImageRecord r in images)
                    Console.Out.WriteLine(r.Digest);
                return 0;
            }
            var rows = new List<string[]> { new[] { "NAME", "DIGEST", "SIZE", "CREATED" } };
            foreach (ImageRecord r in images)
            {
                foreach (string n in r.Names.IsDefaultOrEmpty ? ["<none>"] : r.Names)
                    rows.Add([n, ShortDigest(r.Digest), Size(r.Size), Ago(r.Created)]);
            }
            int[] widths = Enumerable.Range(0, 4).Select(c => rows.Max(row => row[c].Length)).ToArray();
            var sb = new StringBuilder();
            foreach (string[] row in rows)
                sb.AppendLine(string.Join("   ", row.Select((cell, c) => c == 3 ? cell : cell.PadRight(widths[c]))).TrimEnd());
            Console.Out.Write(sb.ToString());
            return 0;
        }));
        return command;
    }

    private Command Inspect()
    {
        var image = new Argument<string>("IMAGE") { Description = "A name or a digest (prefix)" };
        var command = new Command("inspect", "Show an image's record as JSON: names, digests, layers, config") { image };
        command.SetAction(parse => Guarded(() =>
        {
            ImageRecord r = Store(parse).Get(parse.GetValue(image)!);
            using Stream stdout = StandardDescriptors.Open(1);
            using (var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true }))
                WriteRecord(w, r);
            stdout.WriteByte((byte)'\n');
            return 0;
        }));
        return command;
    }

    private Command Remove()
    {
        var images = new Argument<string[]>("IMAGE") { Description = "Names (the name is removed; the image goes with its last name) or digests (the image is removed)", Arity = ArgumentArity.OneOrMore };
        var command = new Command("rm", "Remove images from the store (their layers stay until `image prune`)") { images };
        command.Aliases.Add("rmi");
        command.SetAction(parse => Guarded(() =>
        {
            ImageStore store = Store(parse);
            int status = 0;
            // Every argument is tried, as docker's and podman's rmi do; the exit code is the last failure's.
            foreach (string image in parse.GetValue(images)!)
            {
                try
                {
                    if (store.Remove(image))
                    {
                        Console.Out.WriteLine($"Untagged or deleted: {image}");
                    }
                    else
                    {
                        StandardDescriptors.TellError($"sandbox: {SandboxErrorCode.ImageNotFound.Format()} no image '{image}' in {store.Root}; list them with `sandbox image ls`");
                        status = SandboxErrorCode.ImageNotFound.ExitCode();
                    }
                }
                catch (SandboxException e) when (e.Code == SandboxErrorCode.ImageAmbiguous)
                {
                    StandardDescriptors.TellError($"sandbox: {e.Code.Format()} {e.Message}");
                    status = e.ExitCode;
                }
            }
            return status;
        }));
        return command;
    }

    private Command Prune()
    {
        var command = new Command("prune", "Delete layers no image uses, and what interrupted imports left behind");
        command.SetAction(parse => Guarded(() =>
        {
            ImageStore store = Store(parse);
            PruneResult result = store.Prune(onWait: () => StandardDescriptors.TellError("sandbox: waiting for running imports and sandboxes that use the store..."));
            Console.Out.WriteLine($"Deleted {result.LayersRemoved} layer(s) and {result.BlobsRemoved} blob(s), freed {Size(result.BytesFreed)}" +
                (result.TemporaryEntriesRemoved > 0 ? $"; removed {result.TemporaryEntriesRemoved} work director{(result.TemporaryEntriesRemoved == 1 ? "y" : "ies")} of interrupted imports and runs" : ""));
            return 0;
        }));
        return command;
    }

    private static int Guarded(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (SandboxException e)
        {
            StandardDescriptors.TellError($"sandbox: {e.Code.Format()} {e.Message}");
            return e.ExitCode;
        }
        catch (OperationCanceledException)
        {
            StandardDescriptors.TellError("sandbox: cancelled");
            return 130;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Linux.LinuxException)
        {
            // A file the command needed could not be used: which, with exit 125, not a stack trace.
            StandardDescriptors.TellError($"sandbox: {e.Message} (check the path and its permissions)");
            return ExitCodes.SandboxFailed;
        }
    }

    private static void WriteRecord(Utf8JsonWriter w, ImageRecord r)
    {
        w.WriteStartObject();
        w.WriteString("digest", r.Digest);
        w.WriteString("configDigest", r.ConfigDigest);
        w.WriteStartArray("names");
        foreach (string n in r.Names)
            w.WriteStringValue(n);
        w.WriteEndArray();
        if (r.Created is DateTimeOffset created)
            w.WriteString("created", created);
        w.WriteString("imported", r.Imported);
        w.WriteNumber("size", r.Size);
        w.WriteString("platform", r.Platform);
        w.WriteString("sourceFormat", r.SourceFormat);
        w.WriteBoolean("ownershipFlattened", r.OwnershipFlattened);
        if (r.IdMap is Identity.IdMapping map)
            WriteIdMap(w, "idMap", map);
        w.WriteStartArray("layers");
        foreach (LayerInfo l in r.Layers)
        {
            w.WriteStartObject();
            w.WriteString("diffId", l.DiffId);
            w.WriteString("directory", l.Directory);
            w.WriteNumber("size", l.Size);
            w.WriteStartObject("owners");
            w.WriteString("kind", l.Ownership.Kind == LayerOwnershipKind.Mapped ? "mapped" : "flattened");
            if (l.Ownership.NonRootEntries is long nonRoot)
                w.WriteNumber("nonRootEntries", nonRoot);
            if (l.Ownership.Map is Identity.IdMapping layerMap)
                WriteIdMap(w, "idMap", layerMap);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        ImageConfig c = r.Config;
        w.WriteStartObject("config");
        WriteStrings(w, "env", c.Env);
        if (c.Entrypoint is { } entrypoint)
            WriteStrings(w, "entrypoint", entrypoint);
        if (c.Cmd is { } cmd)
            WriteStrings(w, "cmd", cmd);
        if (c.WorkingDir is not null)
            w.WriteString("workingDir", c.WorkingDir);
        if (c.User is not null)
            w.WriteString("user", c.User);
        if (c.StopSignal is not null)
            w.WriteString("stopSignal", c.StopSignal);
        w.WriteStartObject("labels");
        foreach (var (k, v) in c.Labels.OrderBy(l => l.Key, StringComparer.Ordinal))
            w.WriteString(k, v);
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void WriteIdMap(Utf8JsonWriter w, string name, Identity.IdMapping map)
    {
        w.WriteStartObject(name);
        w.WriteNumber("hostUid", map.HostUid);
        w.WriteNumber("hostGid", map.HostGid);
        w.WriteNumber("uidStart", map.Uids.Start);
        w.WriteNumber("uidCount", map.Uids.Count);
        w.WriteNumber("gidStart", map.Gids.Start);
        w.WriteNumber("gidCount", map.Gids.Count);
        w.WriteEndObject();
    }

    private static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (string v in values)
            w.WriteStringValue(v);
        w.WriteEndArray();
    }

    private static string ShortDigest(string digest) => Digest.TryParse(digest, out Digest d) ? d.Short : digest;

    internal static string Size(long bytes)
    {
        string[] units = ["B", "kB", "MB", "GB", "TB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1000 && unit < units.Length - 1)
        {
            value /= 1000;
            unit++;
        }
        return unit == 0 ? $"{bytes} B" : value.ToString(value < 10 ? "0.0#" : "0.#", CultureInfo.InvariantCulture) + " " + units[unit];
    }

    private static string Ago(DateTimeOffset? time)
    {
        if (time is not DateTimeOffset t)
            return "";
        TimeSpan age = DateTimeOffset.UtcNow - t;
        return age.TotalSeconds < 0 ? t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)
            : age.TotalMinutes < 1 ? "just now"
            : age.TotalHours < 1 ? Count((int)age.TotalMinutes, "minute")
            : age.TotalDays < 2 ? Count((int)age.TotalHours, "hour")
            : age.TotalDays < 60 ? Count((int)age.TotalDays, "day")
            : age.TotalDays < 730 ? Count((int)(age.TotalDays / 30), "month")
            : Count((int)(age.TotalDays / 365), "year");

        static string Count(int n, string unit) => n == 1 ? $"1 {unit} ago" : $"{n} {unit}s ago";
    }
}

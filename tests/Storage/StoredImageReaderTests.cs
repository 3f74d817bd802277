using System.Reflection;
using System.Text;
using System.Text.Json;
using Sandbox.Storage;

namespace Sandbox.Tests.Storage;

/// <summary>
/// The run path reads image records with <see cref="StoredImageReader"/>; the store writes them with
/// the serializer (<see cref="StoreJsonContext"/>). These keep the two in step.
/// </summary>
public class StoredImageReaderTests
{
    private static StoredImage Full() => new()
    {
        SchemaVersion = 1,
        Digest = "sha256:" + new string('a', 64),
        ConfigDigest = "sha256:" + new string('b', 64),
        Names = ["example/app:1", "example/app:latest"],
        Created = new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.FromHours(2)),
        Imported = new DateTimeOffset(2026, 11, 26, 23, 59, 58, 123, TimeSpan.Zero),
        Size = 5_000_000_000,
        Platform = "linux/arm64/v8",
        SourceFormat = "docker-archive",
        OwnershipFlattened = false,
        HasManifest = true,
        Layers =
        [
            new StoredLayer { DiffId = "sha256:" + new string('c', 64), Key = "k1", Size = 123, Owners = StoredOwners.Flattened(0) },
            new StoredLayer
            {
                DiffId = "sha256:" + new string('d', 64), Key = "k2", Size = 4_294_967_296,
                Owners = new StoredOwners
                {
                    Kind = StoredOwners.MappedKind, HostUid = 4_000_000_000, HostGid = 1001, UidStart = 100000, UidCount = 65536,
                    GidStart = 200000, GidCount = 1000, NonRootEntries = 42,
                },
            },
            new StoredLayer { DiffId = "sha256:" + new string('e', 64), Key = "k3", Size = 0, Owners = null },
        ],
        Config = new StoredConfig
        {
            Env = ["PATH=/usr/bin", "A=b=c", "UNICODE=\u00e9\u6f22"],
            Entrypoint = ["/bin/sh", "-c"],
            Cmd = ["echo \"quoted\" \\ back"],
            WorkingDir = "/work",
            User = "1000:1000",
            Labels = new Dictionary<string, string> { ["org.opencontainers.image.title"] = "app", ["empty"] = "" },
            StopSignal = "SIGINT",
        },
    };

    private static string Write(StoredImage image) => Encoding.UTF8.GetString(JsonSerializer.SerializeToUtf8Bytes(image, StoreJsonContext.Default.StoredImage));

    private static StoredImage Read(string json) => StoredImageReader.Read(Encoding.UTF8.GetBytes(json));

    [Test]
    public void ARecordWithEveryPropertySetReadsBackAsTheSerializerWroteIt()
    {
        string written = Write(Full());
        Assert.That(Write(Read(written)), Is.EqualTo(written));
    }

    [Test]
    public void TheFixtureSetsEveryPropertyOfEveryRecordType()
    {
        // A property added to a record type but left at its default here would escape the round trip
        // above, and so could be missing from the reader: make it set.
        StoredImage full = Full();
        var unset = new List<string>();
        Check(full, unset);
        Check(full.Layers[1], unset);
        Check(full.Layers[1].Owners!, unset);
        Check(full.Config, unset);
        Assert.That(unset, Is.Empty, "properties left at their default in the fixture: set them, and read them in StoredImageReader");
    }

    private static void Check(object record, List<string> unset)
    {
        object fresh = Activator.CreateInstance(record.GetType())!;
        foreach (PropertyInfo p in record.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (!p.CanWrite || p.GetCustomAttribute<System.Text.Json.Serialization.JsonIgnoreAttribute>() is not null)
                continue;
            object? value = p.GetValue(record);
            if (value is null || (p.Name != nameof(StoredImage.SchemaVersion) && Equals(value, p.GetValue(fresh))))
                unset.Add($"{record.GetType().Name}.{p.Name}");
        }
    }

    [Test]
    public void MissingPropertiesKeepTheDefaultsAndUnknownOnesAreIgnored()
    {
        StoredImage image = Read("""
            {"digest":"sha256:00","future":{"x":[1,{"y":[]}]},"layers":[{"key":"k","unknown":true,"more":[{},[]],
             "owners":{"kind":"flattened","extra":{"a":[1]}}}],"config":{"newField":[["x"]],"user":"u"},"last":7}
            """);
        Assert.Multiple(() =>
        {
            Assert.That(image.SchemaVersion, Is.EqualTo(1));
            Assert.That(image.Names, Is.Empty);
            Assert.That(image.OwnershipFlattened, Is.True);
            Assert.That(image.Layers.Single().Key, Is.EqualTo("k"));
            Assert.That(image.Layers.Single().Owners!.Kind, Is.EqualTo("flattened"));
            Assert.That(image.Config.Env, Is.Null);
            Assert.That(image.Config.User, Is.EqualTo("u"), "read after an unknown nested property");
        });
    }

    [Test]
    public void NullsReadAsTheSerializerReadsThem()
    {
        const string json = """{"created":null,"names":null,"config":{"env":null,"labels":null,"user":null},"layers":[{"owners":null,"diffId":null}]}""";
        StoredImage ours = Read(json);
        StoredImage theirs = JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredImage)!;
        Assert.That(Write(ours), Is.EqualTo(Write(theirs)));
    }

    [TestCase("[]")]
    [TestCase("""{"digest":5}""")]
    [TestCase("""{"size":"big"}""")]
    [TestCase("""{"size":null}""")]
    [TestCase("""{"created":"yesterday"}""")]
    [TestCase("""{"names":"one"}""")]
    [TestCase("""{"layers":[{"size":1.5}]}""")]
    [TestCase("""{"layers":[{"owners":{"hostUid":-1}}]}""")]
    [TestCase("""{"config":{"labels":{"a":1}}}""")]
    [TestCase("""{"digest":"sha256:00" """)]
    [TestCase("""{"digest":"sha256:00"} {}""")]
    [TestCase("""{"names":["a",{}]}""")]
    [TestCase("""{"layers":[{"key":"k"},5]}""")]
    [TestCase("""{"config":{"env":["A=b"],"cmd":{}}}""")]
    [TestCase("""{"layers":[{"owners":{"kind":"mapped","gidCount":"many"}}]}""")]
    public void DamagedRecordsAreJsonErrorsAsWithTheSerializer(string json)
    {
        Assert.Throws(Is.InstanceOf<JsonException>(), () => JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredImage));
        Assert.Throws(Is.InstanceOf<JsonException>(), () => Read(json));
    }

    [Test]
    public void StringsWithEveryEscapeAndNonAsciiTextReadAsTheSerializerReadsThem()
    {
        const string json = """{"digest":"a\"b\\c\/d\b\f\n\r\t\u00e9\u6f22\ud83d\ude00 é漢😀 end","names":["x\u0000y"]}""";
        StoredImage ours = Read(json);
        StoredImage theirs = JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredImage)!;
        Assert.That(ours.Digest, Is.EqualTo(theirs.Digest));
        Assert.That(ours.Digest, Is.EqualTo("a\"b\\c/d\b\f\n\r\t\u00e9\u6f22\U0001F600 \u00e9\u6f22\U0001F600 end"));
        Assert.That(ours.Names, Is.EqualTo(theirs.Names));
    }

    [TestCase("2026-11-27T20:57:53.6085399+00:00")]
    [TestCase("2026-11-27T20:57:53.6+02:00")]
    [TestCase("2026-11-27T20:57:53-05:30")]
    [TestCase("2026-11-27T20:57:53Z")]
    [TestCase("2026-11-27T20:57:53.1234567Z")]
    [TestCase("2026-11-27T20:57:53.1234567899Z")]
    [TestCase("2026-11-27T20:57:53")]
    [TestCase("2026-11-27")]
    public void DatesReadAsTheSerializerReadsThem(string date)
    {
        string json = $$"""{"created":"{{date}}","imported":"{{date}}"}""";
        StoredImage ours = Read(json);
        StoredImage theirs = JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredImage)!;
        Assert.That(ours.Created, Is.EqualTo(theirs.Created));
        Assert.That(ours.Created!.Value.Offset, Is.EqualTo(theirs.Created!.Value.Offset));
        Assert.That(ours.Imported, Is.EqualTo(theirs.Imported));
    }

    [TestCase("""{"digest":"a\x"}""")]
    [TestCase("""{"digest":"\ud83d"}""")]
    [TestCase("""{"digest":"\ude00"}""")]
    [TestCase("""{"digest":"\u12"}""")]
    [TestCase("""{"size":01}""")]
    [TestCase("""{"size":1.}""")]
    [TestCase("""{"size":-}""")]
    [TestCase("""{"size":1e}""")]
    [TestCase("""{"size":+1}""")]
    [TestCase("""{"size":9223372036854775808}""")]
    [TestCase("""{"schemaVersion":2147483648}""")]
    [TestCase("""{"size":1e3}""")]
    [TestCase("""{"hasManifest":tru}""")]
    [TestCase("""{"digest":"a",}""")]
    [TestCase("""{"names":["a",]}""")]
    [TestCase("""{'digest':"a"}""")]
    [TestCase("""{"created":"2026-13-01T00:00:00Z"}""")]
    [TestCase("""{"created":"2026-02-30T00:00:00Z"}""")]
    [TestCase("""{"created":"2026-11-27T24:00:00Z"}""")]
    [TestCase("""{"created":"2026-11-27T20:57:53.12345678901234567Z"}""")]
    public void MalformedJsonIsAnErrorAsWithTheSerializer(string json)
    {
        Assert.Throws(Is.InstanceOf<JsonException>(), () => JsonSerializer.Deserialize(json, StoreJsonContext.Default.StoredImage));
        Assert.Throws(Is.InstanceOf<JsonException>(), () => Read(json));
    }

    [Test]
    public void AControlCharacterInAStringAndInvalidUtf8AreErrors()
    {
        Assert.Throws(Is.InstanceOf<JsonException>(), () => StoredImageReader.Read(Encoding.UTF8.GetBytes("{\"digest\":\"a\tb\"}")));
        Assert.Throws(Is.InstanceOf<JsonException>(), () => StoredImageReader.Read(new byte[] { (byte)'{', (byte)'"', 0xC3, (byte)'"', (byte)':', (byte)'1', (byte)'}' }));
    }

    [Test]
    public void NestingDeeperThanTheSerializersLimitIsRefusedAndUpToItIsRead()
    {
        string Nested(int depth) => "{\"future\":" + new string('[', depth - 1) + new string(']', depth - 1) + "}";
        Assert.That(Read(Nested(RecordJson.MaxDepth)).SchemaVersion, Is.EqualTo(1));
        Assert.Throws(Is.InstanceOf<JsonException>(), () => Read(Nested(RecordJson.MaxDepth + 1)));
    }
}

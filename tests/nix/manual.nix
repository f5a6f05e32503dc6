# The buildLayeredImage and streamLayeredImage examples of the nixpkgs manual (dockerTools
# section), each as the manual writes it with only the import changed, and nixpkgs' `hello`
# rewritten with builtins.derivation: a `hello` that greets, with four libraries below it as
# the manual's has (libunistring, libidn2, libgcc, glibc), and its info page and man page.
# tests/nix_functions.rs builds them, checks them with `nix-build --check`, loads and runs them;
# the README's table lists them.
#
# What the examples take from nixpkgs' own dockerTools beside the two functions (binSh,
# shadowSetup) stays nixpkgs': stand-ins here, made of busybox and Debian's shadow. The
# shadowSetup example needs fakeroot and proot: Debian's, as in tests/nix/images.nix.
{ layeredGenDir, busyboxDir, debianDir ? null }:
let
  busybox = builtins.path { path = busyboxDir; name = "busybox-static"; };
  sh = "${busybox}/bin/sh";
  layered-gen = builtins.path { path = layeredGenDir; name = "layered-gen"; };
  nixpkgsDockerTools = {
    # A /bin/sh (nixpkgs links bashInteractive's).
    binSh = mk "bin-sh" "mkdir -p $out/bin && ln -s ${busybox}/bin/sh $out/bin/sh";
    # nixpkgs' script, in POSIX sh, with Debian's shadow for nixpkgs'.
    shadowSetup = ''
      export PATH=${debian}/bin:$PATH
      mkdir -p /etc/pam.d
      if [ ! -f /etc/passwd ]; then
        echo "root:x:0:0::/root:/bin/sh" > /etc/passwd
        echo "root:!x:::::::" > /etc/shadow
      fi
      if [ ! -f /etc/group ]; then
        echo "root:x:0:" > /etc/group
        echo "root:x::" > /etc/gshadow
      fi
      [ -f /etc/login.defs ] || touch /etc/login.defs
    '';
  };
  debianTools = import ./debian.nix { inherit debianDir sh; };
  inherit (debianTools) debian;
  # The import a dockerTools user changes: buildLayeredImage and streamLayeredImage are ours,
  # the helpers stay nixpkgs'.
  dockerTools = nixpkgsDockerTools // import ../../nix {
    inherit layered-gen;
    runtimeShell = sh;
  };
  # The same with fakeroot and proot, for fakeRootCommands (Debian's, run by its dash).
  dockerToolsRooted = nixpkgsDockerTools // import ../../nix ({
    inherit layered-gen;
  } // debianTools.nixArgs);
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = sh;
    args = [ "-c" script ];
  };
  lib.getExe = drv: "${drv}/bin/${drv.meta.mainProgram}";

  glibc = mk "glibc-2.38-27" "mkdir -p $out/lib && echo 'the C library' > $out/lib/libc.so.6";
  libgcc = mk "xgcc-12.3.0-libgcc" "mkdir -p $out/lib && echo ${glibc} > $out/lib/libgcc_s.so.1";
  libunistring = mk "libunistring-1.1" "mkdir -p $out/lib && echo ${glibc} > $out/lib/libunistring.so.5";
  libidn2 = mk "libidn2-2.3.4" "mkdir -p $out/lib && echo ${libunistring} > $out/lib/libidn2.so.0";
  hello = (mk "hello-2.12.1" ''
    mkdir -p $out/bin $out/share/info $out/share/man/man1 $out/share/locale/de/LC_MESSAGES
    printf '#!${sh}\n# ${glibc} ${libgcc} ${libidn2}\necho "Hello, world!"\n' > $out/bin/hello
    chmod +x $out/bin/hello
    echo 'hello: an info page' > $out/share/info/hello.info
    echo '.TH HELLO 1' | gzip -n > $out/share/man/man1/hello.1.gz
    echo 'Hallo, Welt!' > $out/share/locale/de/LC_MESSAGES/hello.mo
  '') // { meta.mainProgram = "hello"; };
in
{
  inherit hello;

  # ex-dockerTools-buildLayeredImage-hello
  buildLayeredImageHello = dockerTools.buildLayeredImage {
    name = "hello";
    tag = "latest";

    contents = [ hello ];

    config.Cmd = [ "/bin/hello" ];
  };

  # ex-dockerTools-streamLayeredImage-hello
  streamLayeredImageHello = dockerTools.streamLayeredImage {
    name = "hello";
    tag = "latest";

    contents = [ hello ];

    config.Cmd = [ "/bin/hello" ];
  };

  # ex-dockerTools-streamLayeredImage-exploringlayers
  exploringLayers = dockerTools.streamLayeredImage {
    name = "hello";
    contents = [ hello ];
  };

  # ex-dockerTools-streamLayeredImage-exploringlayers, includeStorePaths = false
  exploringLayersNoStore = dockerTools.streamLayeredImage {
    name = "hello";
    contents = [ hello ];
    includeStorePaths = false;
  };

  # ex-dockerTools-helpers-buildLayeredImage
  envHelpers = dockerTools.buildLayeredImage {
    name = "env-helpers";
    tag = "latest";

    contents = [
      hello
      dockerTools.binSh
    ];

    config = {
      Cmd = [ "/bin/hello" ];
    };
  };

  # ex-dockerTools-shadowSetup-buildLayeredImage
  shadowBasic = let dockerTools = dockerToolsRooted; in dockerTools.buildLayeredImage {
    name = "shadow-basic";
    tag = "latest";

    contents = [ hello ];

    fakeRootCommands = ''
      ${dockerTools.shadowSetup}
      groupadd -r hello
      useradd -r -g hello hello
      mkdir /data
      chown hello:hello /data
    '';
    enableFakechroot = true;

    config = {
      Cmd = [ "/bin/hello" ];
      WorkingDir = "/data";
    };
  };

  # ex-dockerTools-exportImage-hello: the image exportImage is given (nix/ has no
  # exportImage; `layered-gen export` flattens it).
  exportImageHello = dockerTools.buildLayeredImage {
    name = "hello";
    contents = [ hello ];
  };

  # ex-dockerTools-streamLayeredImage-configclosure
  configClosure = dockerTools.streamLayeredImage {
    name = "hello";
    tag = "latest";
    config.Cmd = [ "${lib.getExe hello}" ];
  };
}

//! The desktop window (eframe/egui): the VM list with each VM's state, a live thumbnail of
//! its screen and its actions; the create and edit form with every field checked as it is
//! typed; the reinstall, delete and CD dialogs; the Host page.
//!
//! The window drives VMs exactly as the CLI does, through the same VM service
//! ([`VmService`]), so closing it leaves VMs running and reopening finds them. Actions
//! that wait (start waits for the VMM's VNC line; destroy may wait for a timeout; a new
//! disk takes a moment; a file dialog waits for the user) run on worker threads and report
//! back, so the window never freezes.
//!
//! Modules: [`list`] (the VM list), [`form`] (create/edit), [`dialogs`] (delete, reinstall, CD), [`files`] (rfd),
//! [`thumbs`] (thumbnails), [`host`] (the host page). The console is [`crate::console`].

pub mod dialogs;
pub mod files;
pub mod form;
pub mod host;
pub mod list;
pub mod thumbs;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use eframe::egui;
use egui::{Color32, RichText};

use crate::host_check::HostCheck;
use crate::library::{HostFacts, Library, VmDef};
use crate::runtime::{self, ExistingImages, Runtime, VmState};
use crate::service::{Control, VmService};

use dialogs::{MediaDialog, ReinstallDialog};
use files::{Files, Target};
use form::{FormDialog, VmForm};
/// How often the list asks each VM its state.
const REFRESH: Duration = Duration::from_secs(1);

/// One row of the list.
struct Row {
    name: String,
    def: Result<VmDef, String>,
    state: VmState,
    vnc: Option<String>,
    /// A running VM's firmware found nothing to boot.
    boot: Option<runtime::BootFailure>,
    /// A running VM's network card lost its link.
    net_down: bool,
}

/// Actions that run on a worker thread.
enum Job {
    Start,
    Shutdown,
    Destroy,
    Reset,
    Pause,
    Resume,
    Delete {
        disks: bool,
    },
    Clone {
        new_name: String,
        linked: bool,
    },
    Reinstall {
        existing: ExistingImages,
    },
    /// Eject (None) or change the CD.
    Media {
        iso: Option<std::path::PathBuf>,
    },
    Screenshot {
        path: std::path::PathBuf,
    },
}

pub struct VmdeskApp {
    vms: VmService,
    host: HostFacts,
    rows: Vec<Row>,
    list_error: Option<String>,
    refreshed: Option<Instant>,
    form: Option<FormDialog>,
    confirm_delete: Option<(String, bool)>,
    /// The Clone dialog: the VM to copy, the name typed for the copy, and whether it is
    /// a linked clone.
    clone_as: Option<(String, String, bool)>,
    confirm_reinstall: Option<ReinstallDialog>,
    media: Option<MediaDialog>,
    files: Files,
    thumbs: thumbs::Thumbnails,
    host_check: Option<HostCheck>,
    show_host: bool,
    messages: Vec<(Instant, String, bool)>,
    done_tx: Sender<(String, Result<String, String>)>,
    done_rx: Receiver<(String, Result<String, String>)>,
    busy: std::collections::HashSet<String>,
    console: Option<crate::console::Console>,
    serial: crate::serial::view::SerialWindows,
    ctx: Option<egui::Context>,
}

impl VmdeskApp {
    pub fn new(lib: Library, rt: Runtime, host: HostFacts) -> VmdeskApp {
        let (done_tx, done_rx) = channel();
        VmdeskApp {
            vms: VmService::new(lib, rt),
            host,
            rows: Vec::new(),
            list_error: None,
            refreshed: None,
            form: None,
            confirm_delete: None,
            clone_as: None,
            confirm_reinstall: None,
            media: None,
            files: Files::default(),
            thumbs: Default::default(),
            host_check: None,
            show_host: false,
            messages: Vec::new(),
            done_tx,
            done_rx,
            busy: Default::default(),
            console: None,
            serial: Default::default(),
            ctx: None,
        }
    }

    fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        match self.vms.list() {
            Ok(vms) => {
                self.list_error = None;
                self.rows = vms
                    .into_iter()
                    .map(|v| Row {
                        name: v.name,
                        def: v.def,
                        state: v.state,
                        vnc: v.vnc.map(runtime::vnc_display),
                        boot: v.boot,
                        net_down: v.net_down,
                    })
                    .collect();
            }
            Err(e) => self.list_error = Some(e.to_string()),
        }
    }

    fn run_job(&mut self, name: &str, job: Job) {
        let (vms, tx, name) = (self.vms.clone(), self.done_tx.clone(), name.to_string());
        self.busy.insert(name.clone());
        std::thread::spawn(move || {
            let r = (|| -> anyhow::Result<String> {
                Ok(match job {
                    Job::Start => {
                        let started = vms.start(&name)?;
                        let mut m = match started.vnc {
                            Some(a) => {
                                format!("started '{name}': vncviewer {}", runtime::vnc_display(a))
                            }
                            None => format!("started '{name}'"),
                        };
                        for w in started.warnings {
                            m += &format!(" (warning: {w})");
                        }
                        m
                    }
                    Job::Shutdown => {
                        vms.control(&name, Control::PowerButton)?;
                        format!("pressed the power button of '{name}'")
                    }
                    Job::Destroy => {
                        vms.destroy(&name, Duration::from_secs(10))?;
                        format!("'{name}' is off")
                    }
                    Job::Reset => {
                        vms.control(&name, Control::Reset)?;
                        format!("reset '{name}'")
                    }
                    Job::Pause => {
                        vms.control(&name, Control::Pause)?;
                        format!("paused '{name}'")
                    }
                    Job::Resume => {
                        vms.control(&name, Control::Resume)?;
                        format!("resumed '{name}'")
                    }
                    Job::Delete { disks } => {
                        vms.delete(&name, disks)?;
                        format!("deleted '{name}'")
                    }
                    Job::Clone { new_name, linked } => {
                        let (_, warnings) =
                            vms.clone_vm(&name, &new_name, linked, &mut |_, _| true)?;
                        let mut m = format!(
                            "cloned '{name}' to '{new_name}'{}",
                            if linked { " (linked)" } else { "" }
                        );
                        for w in warnings {
                            m += &format!(" (warning: {w})");
                        }
                        m
                    }
                    Job::Reinstall { existing } => {
                        let (plan, addr) = vms.reinstall(&name, existing)?;
                        let mut m =
                            format!("reinstalling '{name}' on {} fresh disk(s)", plan.wipe.len());
                        if let Some(a) = addr {
                            m += &format!(": vncviewer {}", runtime::vnc_display(a));
                        }
                        m
                    }
                    Job::Media { iso } => vms.set_media(&name, iso)?,
                    Job::Screenshot { path } => {
                        let path = files::with_png_extension(path);
                        vms.screenshot(&name, &path)?;
                        format!("saved the screen of '{name}' to {}", path.display())
                    }
                })
            })();
            let _ = tx.send((name, r.map_err(|e| format!("{e:#}"))));
        });
    }

    fn say(&mut self, text: String, error: bool) {
        self.messages.push((Instant::now(), text, error));
    }

    #[cfg(test)]
    fn thumbs_started(&self) -> bool {
        self.thumbs.started()
    }

    /// Opens a file dialog for `target`; a desktop without one gets a message instead.
    fn browse(
        &mut self,
        target: Target,
        title: &str,
        filter: Option<(&'static str, &'static [&'static str])>,
        save: bool,
    ) {
        let save_name = match (&target, save) {
            (Target::Screenshot(name), true) => Some(format!("{name}.png")),
            _ => None,
        };
        let ctx = self.ctx.clone();
        let Some(ctx) = ctx else { return };
        if let Err(e) = self
            .files
            .open(target.clone(), title, filter, save_name, &ctx)
        {
            match target {
                // A screenshot still gets taken, into the pictures folder, and says where.
                Target::Screenshot(name) => {
                    let path = files::default_screenshot_path(&name);
                    let _ = e;
                    self.say(
                        "no file dialog on this desktop: the screenshot goes to your pictures folder"
                            .into(),
                        false,
                    );
                    self.run_job(&name, Job::Screenshot { path });
                }
                _ => self.say(e, true),
            }
        }
    }

    /// Puts a file dialog's answer where it belongs.
    fn take_file_answers(&mut self) {
        while let Some((target, answer)) = self.files.poll() {
            let path = match answer {
                Ok(Some(path)) => path,
                Ok(None) => continue,
                Err(e) => {
                    self.say(e, true);
                    continue;
                }
            };
            match target {
                Target::Form(field) => {
                    if let Some(d) = &mut self.form {
                        *d.form.path_mut(field) = path.display().to_string();
                    }
                }
                Target::Media => {
                    if let Some(m) = &mut self.media {
                        m.path = path.display().to_string();
                    }
                }
                Target::Screenshot(name) => self.run_job(&name, Job::Screenshot { path }),
            }
        }
    }

    /// Draws the whole window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.ctx = Some(ui.ctx().clone());
        self.take_file_answers();
        while let Ok((name, r)) = self.done_rx.try_recv() {
            self.busy.remove(&name);
            match r {
                Ok(m) => self.say(m, false),
                Err(e) => self.say(e, true),
            }
            self.refreshed = None;
        }
        if self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.refresh();
        }
        ui.ctx().request_repaint_after(REFRESH);
        self.messages
            .retain(|(t, _, err)| t.elapsed() < Duration::from_secs(if *err { 30 } else { 8 }));

        egui::Panel::top("toolbar").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("vmdesk");
                if ui.button("New VM").clicked() && self.form.is_none() {
                    self.form = Some(FormDialog::new(VmForm::default()));
                }
                if ui
                    .button("Demo")
                    .on_hover_text("Create and start the demo VM")
                    .clicked()
                {
                    match self.vms.prepare_demo() {
                        Ok(true) => self.run_job(crate::demo::NAME, Job::Start),
                        Ok(false) => self.say("'demo' is already running".into(), false),
                        Err(e) => self.say(format!("{e:#}"), true),
                    }
                }
                if ui.button("Host").clicked() && self.host_check.is_some() {
                    self.show_host = true;
                }
            });
        });
        egui::Panel::bottom("messages").show(ui, |ui| {
            if self.messages.is_empty() {
                ui.label(" ");
            }
            for (_, m, err) in &self.messages {
                let colour = if *err {
                    Color32::LIGHT_RED
                } else {
                    ui.visuals().text_color()
                };
                ui.label(RichText::new(m).color(colour));
            }
        });
        egui::CentralPanel::default().show(ui, |ui| self.list_ui(ui));
        let live: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.state.is_live())
            .map(|r| r.name.clone())
            .collect();
        self.thumbs.update(ui.ctx(), &self.vms, live);
        self.form_dialog(ui.ctx());
        self.delete_dialog(ui.ctx());
        self.clone_dialog(ui.ctx());
        self.reinstall_dialog(ui.ctx());
        self.media_dialog(ui.ctx());
        self.host_page(ui.ctx());
        self.console_window(ui.ctx());
        self.serial.show(ui.ctx(), &self.vms);
    }

    fn console_window(&mut self, ctx: &egui::Context) {
        let Some(console) = &mut self.console else {
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Console: {}", console.name))
            .open(&mut open)
            .default_size([760.0, 470.0])
            .resizable(true)
            .show(ctx, |ui| console.ui(ui));
        if !open {
            self.console = None;
        }
    }
}

/// Opens the window; returns when it is closed (VMs keep running).
pub fn run() -> anyhow::Result<()> {
    let lib = Library::open_default()?;
    let mut app = VmdeskApp::new(lib, Runtime::open_default(), HostFacts::detect())
        .with_host_check(HostCheck::detect());
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("vmdesk")
            .with_inner_size([1180.0, 600.0]),
        ..Default::default()
    };
    eframe::run_ui_native("vmdesk", options, move |ui, _frame| app.ui(ui))
        .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn host() -> HostFacts {
        HostFacts {
            ram: Some(2048 * MIB),
            cpus: 2,
        }
    }

    #[test]
    fn the_form_checks_each_field() {
        let taken = |n: &str| n == "web1";
        let mut f = VmForm {
            name: "new".into(),
            ..Default::default()
        };
        let c = f.check(&taken, &host());
        assert!(c.ok(), "{c:?}");

        f.name = "web1".into();
        f.memory = "4G".into();
        f.cpus = "4".into();
        let c = f.check(&taken, &host());
        assert!(!c.ok());
        assert_eq!(c.name.as_deref(), Some("a VM named 'web1' already exists"));
        assert!(c.memory.as_deref().unwrap().contains("2048 MiB"), "{c:?}");
        assert_eq!(c.cpus, None);
        assert!(c.cpus_warning.is_some());
        assert_eq!(c.disk, None);

        f.name = "".into();
        f.memory = "lots".into();
        f.cpus = "0".into();
        f.disk_size = "10X".into();
        f.cdrom = "/no/such.iso".into();
        f.vnc = "everywhere".into();
        let c = f.check(&taken, &host());
        for (field, v) in [
            ("name", &c.name),
            ("memory", &c.memory),
            ("cpus", &c.cpus),
            ("disk", &c.disk),
            ("cdrom", &c.cdrom),
            ("vnc", &c.vnc),
        ] {
            assert!(v.is_some(), "{field}: {c:?}");
        }
        // No disk at all is fine.
        f = VmForm {
            name: "x".into(),
            disk_size: " ".into(),
            ..Default::default()
        };
        assert!(f.check(&taken, &host()).ok());
        let a = f.to_new_vm().unwrap();
        assert!(a.disks.is_empty());
        assert_eq!(a.memory, Some(1 << 30));
    }

    fn temp(tag: &str) -> (Library, Runtime, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("vmdesk-gui-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("run")).unwrap();
        (
            Library::at(root.join("vms")),
            Runtime::at(root.join("run")),
            root,
        )
    }

    #[test]
    fn ui_create_dialog_rejects_a_taken_name_and_too_much_memory() {
        use egui::accesskit::Role;
        use egui_kittest::Harness;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let (lib, rt, root) = temp("create");
        lib.create(&VmDef::new("web1", 64, 1)).unwrap();
        // The form's default memory (1G) is more than this host has.
        let host = HostFacts {
            ram: Some(512 * MIB),
            cpus: 2,
        };
        let app = VmdeskApp::new(lib, rt, host);
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("New VM").click();
        h.run_steps(2);
        assert!(h.state().form.is_some());
        // An empty name is refused before anything is typed.
        h.get_by_label("a name is needed");
        {
            let name_field = h.get_all_by_role(Role::TextInput).next().unwrap();
            name_field.focus();
            name_field.type_text("web1");
        }
        h.run_steps(3);
        assert_eq!(h.state().form.as_ref().unwrap().form.name, "web1");
        h.get_by_label("a VM named 'web1' already exists");
        h.get_by_label_contains("more than this host's 512 MiB");
        let create = h.get_by_role_and_label(Role::Button, "Create");
        assert!(create.accesskit_node().is_disabled());
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_clone_asks_for_a_free_name() {
        use egui::accesskit::Role;
        use egui_kittest::Harness;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let (lib, rt, root) = temp("clone");
        lib.create(&VmDef::new("web1", 64, 1)).unwrap();
        lib.create(&VmDef::new("web2", 64, 1)).unwrap();
        let app = VmdeskApp::new(lib, rt, host());
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_all_by_label("Clone…").next().unwrap().click();
        h.run_steps(2);
        // The copy's name is proposed, free, and Clone may be pressed.
        assert_eq!(
            h.state().clone_as,
            Some(("web1".to_string(), "web1-clone".to_string(), false))
        );
        let clone = h.get_by_role_and_label(Role::Button, "Clone");
        assert!(!clone.accesskit_node().is_disabled());
        // A taken name: said, and Clone is greyed out.
        h.state_mut().clone_as = Some(("web1".into(), "web2".into(), false));
        h.run_steps(2);
        h.get_by_label("a VM named 'web2' exists");
        let clone = h.get_by_role_and_label(Role::Button, "Clone");
        assert!(clone.accesskit_node().is_disabled());
        h.get_by_label("Cancel").click();
        h.run_steps(2);
        assert_eq!(h.state().clone_as, None);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_list_shows_each_vm_state() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("list");
        lib.create(&VmDef::new("web1", 64, 1)).unwrap();
        lib.create(&VmDef::new("gone", 256, 2)).unwrap();
        std::fs::write(lib.path_of("broken"), "name = [").unwrap();
        // A VMM that ended with a failure: crashed.
        std::fs::write(rt.pid_path("gone"), "999999999\n").unwrap();
        std::fs::write(rt.exit_path("gone"), "exit 1\n").unwrap();
        std::fs::write(
            rt.log_path("gone"),
            "vmdesk-vmm: the guest stopped: triple fault\n",
        )
        .unwrap();
        let app = VmdeskApp::new(lib, rt, host());
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("web1");
        h.get_by_label("gone");
        h.get_by_label("crashed");
        h.get_by_label("unreadable");
        h.get_by_label("256 MiB");
        assert_eq!(h.query_all_by_label("stopped").count(), 2);
        assert_eq!(h.query_all_by_label("Start").count(), 3);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_list_shows_the_network_and_the_forwards() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("netlist");
        let mut web = VmDef::new("web", 64, 1);
        web.forwards = vec![
            "tcp::2222-:22".parse().unwrap(),
            "udp:0.0.0.0:5353-:53".parse().unwrap(),
        ];
        lib.create(&web).unwrap();
        let mut lan = VmDef::new("lan", 64, 1);
        lan.network = crate::library::NetMode::Tap("vmtap0".into());
        lib.create(&lan).unwrap();
        let mut off = VmDef::new("off", 64, 1);
        off.network = crate::library::NetMode::None;
        lib.create(&off).unwrap();
        let app = VmdeskApp::new(lib, rt, host());
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        h.get_by_label("Network");
        h.get_by_label("nat");
        h.get_by_label("127.0.0.1:2222→22");
        h.get_by_label("0.0.0.0:5353→53/udp");
        h.get_by_label("tap:vmtap0");
        // "-" is also the VNC column's: one for each stopped VM there, one for "off" here.
        assert_eq!(h.query_all_by_label("-").count(), 4);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_list_notes_a_vm_with_nothing_to_boot() {
        use egui_kittest::Harness;
        use egui_kittest::kittest::Queryable as _;
        use std::io::{BufRead, BufReader, Write};
        let (lib, rt, root) = temp("noboot");
        lib.create(&VmDef::new("nb", 64, 1)).unwrap();
        lib.create(&VmDef::new("ok", 64, 1)).unwrap();
        // Two running VMs as the app sees them: a live VMM process (a stand-in) and a
        // control socket answering `status`; one sits at "No bootable device".
        let mut vmms = Vec::new();
        // "ok" booted, but its network card's link went down (its passt ended).
        for (name, boot, link) in [
            (
                "nb",
                serde_json::json!({"state": "failed", "tried": [{"device": "cdrom"}],
                    "message": "No bootable device: the CD d.iso is not bootable"}),
                "up",
            ),
            (
                "ok",
                serde_json::json!({"state": "booted", "tried": []}),
                "down",
            ),
        ] {
            vmms.push(runtime::fake_vmm(&rt, name));
            let listener = std::os::unix::net::UnixListener::bind(rt.socket_path(name)).unwrap();
            let net = serde_json::json!({"mode": "user", "mac": "52:54:00:12:34:56",
                "link": link, "forwards": []});
            let reply =
                serde_json::json!({"return": {"status": "running", "boot": boot, "net": net}});
            std::thread::spawn(move || {
                for conn in listener.incoming().map_while(Result::ok) {
                    let mut line = String::new();
                    let _ = BufReader::new(&conn).read_line(&mut line);
                    let _ = writeln!(&conn, "{reply}");
                }
            });
        }
        let app = VmdeskApp::new(lib, rt, host());
        let mut h = Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app);
        h.run_steps(2);
        assert_eq!(h.query_all_by_label("running").count(), 2);
        assert_eq!(h.query_all_by_label(runtime::NO_BOOT_NOTE).count(), 1);
        assert_eq!(h.query_all_by_label(runtime::NET_DOWN_NOTE).count(), 1);
        assert!(h.state().rows.iter().any(|r| r.name == "ok" && r.net_down));
        let row = h.state().rows.iter().find(|r| r.name == "nb").unwrap();
        let f = row.boot.as_ref().expect("nb's boot failure");
        assert_eq!(
            f.message,
            "No bootable device: the CD d.iso is not bootable"
        );
        assert!(f.gui_fix().contains("Reset"));
        drop(h);
        for mut v in vmms {
            let _ = v.kill();
            let _ = v.wait();
        }
        let _ = std::fs::remove_dir_all(root);
    }

    fn harness(app: VmdeskApp) -> egui_kittest::Harness<'static, VmdeskApp> {
        egui_kittest::Harness::new_ui_state(|ui, app: &mut VmdeskApp| app.ui(ui), app)
    }

    #[test]
    fn ui_edit_dialog_checks_fields_and_saves_a_rename() {
        use egui::accesskit::Role;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let (lib, rt, root) = temp("edit");
        lib.create(&VmDef::new("other", 64, 1)).unwrap();
        lib.create(&VmDef::new("web1", 512, 1)).unwrap();
        let mut h = harness(VmdeskApp::new(lib.clone(), rt, host()));
        h.run_steps(2);
        // Rows are sorted: other, web1.
        h.get_all_by_label("Edit…").nth(1).unwrap().click();
        h.run_steps(2);
        {
            let d = h.state().form.as_ref().expect("the edit dialog is open");
            assert_eq!(d.form.name, "web1");
            assert_eq!(d.form.memory, "512M");
        }
        // Its own name is not "taken".
        assert!(h.query_by_label_contains("already exists").is_none());
        {
            let f = &mut h.state_mut().form.as_mut().unwrap().form;
            f.name = "other".into();
            f.cmdline = "console=ttyS0".into();
            f.cdrom = "/no/such.iso".into();
        }
        h.run_steps(2);
        h.get_by_label("a VM named 'other' already exists");
        h.get_by_label("a command line needs a kernel");
        h.get_by_label("no such file");
        assert!(
            h.get_by_role_and_label(Role::Button, "Save")
                .accesskit_node()
                .is_disabled()
        );
        {
            let f = &mut h.state_mut().form.as_mut().unwrap().form;
            f.name = "web2".into();
            f.cmdline.clear();
            f.cdrom.clear();
            f.cpus = "2".into();
        }
        h.run_steps(2);
        h.get_by_role_and_label(Role::Button, "Save").click();
        h.run_steps(2);
        assert!(h.state().form.is_none(), "saved and closed");
        assert!(lib.get("web1").is_err());
        let d = lib.get("web2").unwrap();
        assert_eq!((d.cpus, d.memory_mib), (2, 512));
        h.get_by_label_contains("renamed 'web1' to 'web2'");
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn edit_is_refused_while_running_or_changed_elsewhere() {
        let (lib, rt, root) = temp("edit-refused");
        let def = VmDef::new("vm", 64, 1);
        lib.create(&def).unwrap();
        let mut new = def.clone();
        new.cpus = 2;
        // Changed elsewhere since the dialog read it.
        let mut other = def.clone();
        other.memory_mib = 128;
        lib.update(&other).unwrap();
        let e = VmService::new(lib.clone(), rt.clone())
            .save_edit(&def, &new, &host())
            .unwrap_err();
        assert!(e.to_string().contains("changed elsewhere"), "{e}");
        assert_eq!(lib.get("vm").unwrap(), other);
        // Running: a process whose command line names its socket.
        let mut child = crate::runtime::fake_vmm(&rt, "vm");
        let e = VmService::new(lib.clone(), rt.clone())
            .save_edit(&other, &new, &host())
            .unwrap_err();
        assert!(e.to_string().contains("'vm' is running"), "{e}");
        let _ = child.kill();
        let _ = child.wait();
        rt.clean("vm");
        VmService::new(lib.clone(), rt.clone())
            .save_edit(&other, &new, &host())
            .unwrap();
        assert_eq!(lib.get("vm").unwrap().cpus, 2);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_create_runs_on_a_worker_and_checks_direct_boot_fields() {
        use egui::accesskit::Role;
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("create-worker");
        let mut h = harness(VmdeskApp::new(lib.clone(), rt, host()));
        h.run_steps(2);
        h.get_by_label("New VM").click();
        h.run_steps(2);
        {
            let f = &mut h.state_mut().form.as_mut().unwrap().form;
            f.name = "fresh".into();
            f.initrd = root.join("run").display().to_string();
            f.password_file = "/no/such/pw".into();
        }
        h.run_steps(2);
        h.get_by_label("not a regular file");
        h.get_by_label("no such file");
        {
            let f = &mut h.state_mut().form.as_mut().unwrap().form;
            f.initrd.clear();
            f.password_file.clear();
            // No disk: nothing is written outside the test's dirs.
            f.disk_size.clear();
        }
        h.run_steps(2);
        h.get_by_role_and_label(Role::Button, "Create").click();
        for _ in 0..100 {
            h.run_steps(1);
            if h.state().form.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(h.state().form.is_none(), "the create finished");
        assert_eq!(lib.get("fresh").unwrap().memory_mib, 1024);
        h.run_steps(2);
        h.get_by_label("created 'fresh'");
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_browse_without_a_dialog_backend_says_so() {
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("browse");
        let mut app = VmdeskApp::new(lib, rt, host());
        app.files.available = || Err(files::NO_DIALOG.into());
        let mut h = harness(app);
        h.run_steps(2);
        h.get_by_label("New VM").click();
        h.run_steps(2);
        h.get_all_by_label("Browse…").next().unwrap().click();
        h.run_steps(2);
        h.get_by_label(files::NO_DIALOG);
        // Typing still works, and the form is still open.
        assert!(h.state().form.is_some());
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_reinstall_asks_first_and_says_why_not() {
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("reinstall");
        let iso = root.join("inst.iso");
        std::fs::write(&iso, [0u8; 2048]).unwrap();
        let disk = root.join("inst.raw");
        std::fs::write(&disk, [0xAB; 4096]).unwrap();
        let mut def = VmDef::new("inst", 64, 1);
        def.cdrom = Some(iso);
        def.disks.push(crate::library::DiskDef {
            path: disk.clone(),
            format: crate::library::DiskFormat::Raw,
            size: Some(4096),
            preallocated: false,
            bus: crate::library::DiskBus::Virtio,
        });
        lib.create(&def).unwrap();
        lib.create(&VmDef::new("bare", 64, 1)).unwrap();
        let mut h = harness(VmdeskApp::new(lib, rt, host()));
        h.run_steps(2);
        // Rows: bare, inst. No ISO: the dialog says why, and offers nothing to confirm.
        h.get_all_by_label("Reinstall…").next().unwrap().click();
        h.run_steps(2);
        h.get_by_label_contains("'bare' has no installer ISO");
        assert!(h.query_by_label("Erase and reinstall").is_none());
        h.get_by_label("Close").click();
        h.run_steps(2);
        assert!(h.state().confirm_reinstall.is_none());

        h.get_all_by_label("Reinstall…").nth(1).unwrap().click();
        h.run_steps(2);
        h.get_by_label_contains("Everything on them is lost");
        h.get_by_label_contains(&disk.display().to_string());
        h.get_by_label("Erase and reinstall");
        h.get_by_label("Cancel").click();
        h.run_steps(2);
        assert!(h.state().confirm_reinstall.is_none());
        assert!(h.state().busy.is_empty(), "cancel starts nothing");
        assert_eq!(std::fs::read(&disk).unwrap(), [0xAB; 4096]);
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_host_page_shows_on_first_run_with_the_fixes() {
        use crate::host_check::{KvmProblem, tests::facts};
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("host");
        let mut f = facts();
        f.kvm = None;
        f.kvm_error = Some(KvmProblem::NoAccess);
        f.flavor = vmm::host::KvmFlavor::Pvm;
        let app = VmdeskApp::new(lib.clone(), rt.clone(), host())
            .with_host_check(HostCheck::from_facts(f));
        let mut h = harness(app);
        h.run_steps(2);
        // The command, with a Copy button, and the whole fix.
        h.get_by_label("sudo usermod -aG kvm $USER");
        h.get_by_label_contains("log out and log in again");
        assert!(h.query_all_by_label_contains("kvm_pvm").count() >= 1);
        h.get_by_label("This host cannot run VMs yet: the fixes are below.");
        h.get_by_label("Close").click();
        h.run_steps(2);
        assert!(h.query_by_label_contains("sudo usermod").is_none());
        assert!(
            host::seen_marker(&VmService::new(lib.clone(), rt.clone()))
                .unwrap()
                .exists(),
            "remembered"
        );
        h.get_by_label("Host").click();
        h.run_steps(2);
        h.get_by_label("sudo usermod -aG kvm $USER");
        drop(h);

        // A good host, seen before: the page stays closed; on pvm it says what runs.
        let mut f = facts();
        f.flavor = vmm::host::KvmFlavor::Pvm;
        let app = VmdeskApp::new(lib.clone(), rt.clone(), host())
            .with_host_check(HostCheck::from_facts(f.clone()));
        assert!(!app.show_host);
        // First run on a good host: shown once.
        std::fs::remove_file(host::seen_marker(&VmService::new(lib.clone(), rt.clone())).unwrap())
            .unwrap();
        let app = VmdeskApp::new(lib, rt, host()).with_host_check(HostCheck::from_facts(f));
        let mut h = harness(app);
        h.run_steps(2);
        h.get_by_label("This host can run VMs.");
        h.get_by_label_contains("NOT protected-mode guest kernels");
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_stopped_vms_show_a_placeholder_for_their_screen() {
        use egui_kittest::kittest::Queryable as _;
        let (lib, rt, root) = temp("thumbs");
        lib.create(&VmDef::new("a", 64, 1)).unwrap();
        lib.create(&VmDef::new("b", 64, 1)).unwrap();
        let mut h = harness(VmdeskApp::new(lib, rt, host()));
        h.run_steps(2);
        assert_eq!(h.query_all_by_label("off").count(), 2);
        assert!(
            !h.state().thumbs_started(),
            "no worker without a running VM"
        );
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_cd_dialog_changes_a_stopped_vms_iso() {
        use egui::accesskit::Role;
        use egui_kittest::kittest::{NodeT as _, Queryable as _};
        let (lib, rt, root) = temp("cd");
        let iso = root.join("new.iso");
        std::fs::write(&iso, [0u8; 2048]).unwrap();
        lib.create(&VmDef::new("vm", 64, 1)).unwrap();
        let mut h = harness(VmdeskApp::new(lib.clone(), rt, host()));
        h.run_steps(2);
        h.get_by_label("CD…").click();
        h.run_steps(2);
        h.get_by_label("The drive is empty.");
        h.get_by_label_contains("The VM is stopped");
        assert!(
            h.get_by_role_and_label(Role::Button, "Eject")
                .accesskit_node()
                .is_disabled()
        );
        h.state_mut().media.as_mut().unwrap().path = root.join("nope.iso").display().to_string();
        h.run_steps(2);
        h.get_by_label("no such file");
        assert!(
            h.get_by_role_and_label(Role::Button, "Insert")
                .accesskit_node()
                .is_disabled()
        );
        h.state_mut().media.as_mut().unwrap().path = iso.display().to_string();
        h.run_steps(2);
        h.get_by_role_and_label(Role::Button, "Insert").click();
        for _ in 0..100 {
            h.run_steps(1);
            if h.state().busy.is_empty() && h.state().media.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(lib.get("vm").unwrap().cdrom, Some(iso));
        h.run_steps(2);
        h.get_by_label_contains("now has");
        drop(h);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn ui_a_running_vm_gets_a_live_thumbnail() {
        use egui_kittest::kittest::Queryable as _;
        use std::io::{BufRead as _, BufReader, Write as _};
        let (lib, rt, root) = temp("live-thumb");
        lib.create(&VmDef::new("vm", 64, 1)).unwrap();
        // A running VMM as the window sees one: a live process naming the socket in its
        // command line, and a control socket that answers status and screendump.
        let listener = std::os::unix::net::UnixListener::bind(rt.socket_path("vm")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut dumps = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    s.set_nonblocking(false).unwrap();
                    let mut line = String::new();
                    BufReader::new(&s).read_line(&mut line).unwrap();
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let reply = match v["execute"].as_str() {
                        Some("screendump") => {
                            let out = std::path::PathBuf::from(v["path"].as_str().unwrap());
                            runtime::write_png(&out, 320, 200, &vec![0x00ff00; 320 * 200]).unwrap();
                            dumps += 1;
                            r#"{"return":{}}"#
                        }
                        _ => r#"{"return":{"status":"running"}}"#,
                    };
                    let _ = (&s).write_all(format!("{reply}\n").as_bytes());
                }
                dumps
            })
        };
        let mut child = crate::runtime::fake_vmm(&rt, "vm");
        let mut h = harness(VmdeskApp::new(lib, rt, host()));
        let t0 = std::time::Instant::now();
        while h.state().thumbs.get("vm").is_none() && t0.elapsed() < Duration::from_secs(10) {
            h.run_steps(1);
            std::thread::sleep(Duration::from_millis(20));
        }
        let size = h.state().thumbs.get("vm").expect("a thumbnail").size();
        assert_eq!(size, [160, 100]);
        h.run_steps(2);
        h.get_by_label("running");
        assert!(h.query_by_label("off").is_none(), "no placeholder");
        drop(h);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(server.join().unwrap() >= 1);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(root);
    }
}

//! The per-VM dialogs: delete, reinstall (a confirmation: it destroys disk contents), and
//! the CD drive (eject / change the ISO, live on a running VM and in its definition, through
//! `VmService::set_media`).

use std::path::PathBuf;

use eframe::egui;
use egui::{Color32, RichText};

use super::files::Target;
use super::{Job, VmdeskApp};
use crate::runtime::{ExistingImages, ReinstallPlan};
use crate::service::VmService;

/// The reinstall confirmation.
pub struct ReinstallDialog {
    pub name: String,
    /// What will happen, or why it cannot.
    pub plan: Result<ReinstallPlan, String>,
    /// Images the user brought (`path=`): kept or wiped, as chosen here.
    pub theirs: Vec<PathBuf>,
    pub wipe_theirs: bool,
}

impl ReinstallDialog {
    /// Works out what a reinstall of `name` would do, touching nothing.
    pub fn new(vms: &VmService, name: &str) -> ReinstallDialog {
        let mut d = ReinstallDialog {
            name: name.into(),
            plan: Err(String::new()),
            theirs: Vec::new(),
            wipe_theirs: false,
        };
        let def = match vms.get(name) {
            Ok(def) => def,
            Err(e) => {
                d.plan = Err(e.to_string());
                return d;
            }
        };
        d.theirs = def
            .disks
            .iter()
            .filter(|x| x.size.is_none())
            .map(|x| x.path.clone())
            .collect();
        d.plan = vms
            .plan_reinstall(name, ExistingImages::Keep)
            .map_err(|e| e.to_string());
        d
    }

    fn existing(&self) -> ExistingImages {
        if self.wipe_theirs {
            ExistingImages::Wipe
        } else {
            ExistingImages::Keep
        }
    }
}

/// The CD drive dialog.
pub struct MediaDialog {
    pub name: String,
    pub live: bool,
    pub current: Option<PathBuf>,
    pub path: String,
}

impl VmdeskApp {
    pub(super) fn delete_dialog(&mut self, ctx: &egui::Context) {
        let Some((name, disks)) = &mut self.confirm_delete else {
            return;
        };
        let mut decided = None;
        egui::Window::new(format!("Delete '{name}'?"))
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.checkbox(disks, "Also delete its disk images")
                    .on_hover_text(
                        "A UEFI VM's variable store (its boot entries) is deleted with it either \
                     way: it is part of the VM, not a disk of yours.",
                    );
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        if let Some(yes) = decided {
            let (name, disks) = self.confirm_delete.take().expect("checked above");
            if yes {
                self.run_job(&name, Job::Delete { disks });
            }
        }
    }

    /// Asks for the copy's name; the copy runs as a job (its disks may take a while).
    pub(super) fn clone_dialog(&mut self, ctx: &egui::Context) {
        let Some((name, new_name, linked)) = &mut self.clone_as else {
            return;
        };
        let taken = self.vms.exists(new_name.trim());
        let bad = crate::library::validate_name(new_name.trim()).err();
        let mut decided = None;
        egui::Window::new(format!("Clone '{name}'"))
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.label("The copy gets a new MAC address.");
                ui.checkbox(
                    linked,
                    "Linked clone: share the disks instead of copying them",
                )
                .on_hover_text(
                    "Instant and small: both VMs' disks become qcow2 overlays on the \
                         current disks, which turn read-only. Without it the disks are \
                         copied whole.",
                );
                ui.horizontal(|ui| {
                    let l = ui.label("Name of the copy");
                    ui.text_edit_singleline(new_name).labelled_by(l.id);
                });
                let problem = match (&bad, taken) {
                    (Some(e), _) => Some(e.to_string()),
                    (None, true) => Some(format!("a VM named '{}' exists", new_name.trim())),
                    (None, false) => None,
                };
                if let Some(p) = &problem {
                    ui.colored_label(egui::Color32::LIGHT_RED, p);
                }
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(problem.is_none(), egui::Button::new("Clone"))
                        .clicked()
                    {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        if let Some(yes) = decided {
            let (name, new_name, linked) = self.clone_as.take().expect("checked above");
            if yes {
                let new_name = new_name.trim().to_string();
                self.run_job(&name, Job::Clone { new_name, linked });
            }
        }
    }

    pub(super) fn reinstall_dialog(&mut self, ctx: &egui::Context) {
        let Some(d) = &mut self.confirm_reinstall else {
            return;
        };
        let mut decided = None;
        egui::Window::new(format!("Reinstall '{}'?", d.name))
            .collapsible(false)
            .default_width(460.0)
            .resizable(false)
            .show(ctx, |ui| match &d.plan {
                Err(e) => {
                    ui.colored_label(Color32::LIGHT_RED, e);
                    if ui.button("Close").clicked() {
                        decided = Some(false);
                    }
                }
                Ok(plan) => {
                    let ours: Vec<_> = plan
                        .wipe
                        .iter()
                        .filter(|w| !d.theirs.contains(&w.path))
                        .collect();
                    if ours.is_empty() {
                        ui.label("It has no disks vmdesk created.");
                    } else {
                        ui.label(
                            RichText::new(
                                "These disks are replaced by empty ones of the same size and format. Everything on them is lost:",
                            )
                            .strong(),
                        );
                        for w in ours {
                            ui.monospace(format!("{} ({}, {} MiB)", w.path.display(), w.format, w.size >> 20));
                        }
                    }
                    if !d.theirs.is_empty() {
                        ui.separator();
                        ui.label("Images it was given (not created by vmdesk):");
                        for p in &d.theirs {
                            ui.monospace(p.display().to_string());
                        }
                        ui.radio_value(&mut d.wipe_theirs, false, "Leave them as they are");
                        ui.radio_value(&mut d.wipe_theirs, true, "Wipe them too");
                    }
                    ui.label("Then it starts from its installer again.");
                    ui.horizontal(|ui| {
                        let erase = egui::Button::new(
                            RichText::new("Erase and reinstall").color(Color32::WHITE),
                        )
                        .fill(Color32::DARK_RED);
                        if ui.add(erase).clicked() {
                            decided = Some(true);
                        }
                        if ui.button("Cancel").clicked() {
                            decided = Some(false);
                        }
                    });
                }
            });
        if let Some(yes) = decided {
            let d = self.confirm_reinstall.take().expect("checked above");
            if yes {
                self.run_job(
                    &d.name,
                    Job::Reinstall {
                        existing: d.existing(),
                    },
                );
            }
        }
    }

    pub(super) fn media_dialog(&mut self, ctx: &egui::Context) {
        let Some(m) = &mut self.media else {
            return;
        };
        let mut open = true;
        let mut action: Option<Option<PathBuf>> = None;
        let mut browse = false;
        let problem = {
            let p = m.path.trim();
            if p.is_empty() {
                Some("choose an ISO")
            } else if !std::path::Path::new(p).is_file() {
                Some("no such file")
            } else {
                None
            }
        };
        egui::Window::new(format!("CD drive of '{}'", m.name))
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.label(match &m.current {
                    Some(p) => format!("In the drive: {}", p.display()),
                    None => "The drive is empty.".into(),
                });
                if !m.live {
                    ui.label("The VM is stopped: this changes what it starts with.");
                }
                ui.horizontal(|ui| {
                    ui.add(egui::TextEdit::singleline(&mut m.path).desired_width(260.0));
                    browse = ui.button("Browse…").clicked();
                });
                if let Some(p) = problem
                    && !m.path.trim().is_empty()
                {
                    ui.colored_label(Color32::LIGHT_RED, p);
                }
                ui.horizontal(|ui| {
                    let label = if m.current.is_some() {
                        "Change"
                    } else {
                        "Insert"
                    };
                    if ui
                        .add_enabled(problem.is_none(), egui::Button::new(label))
                        .clicked()
                    {
                        action = Some(Some(PathBuf::from(m.path.trim())));
                    }
                    if ui
                        .add_enabled(m.current.is_some(), egui::Button::new("Eject"))
                        .clicked()
                    {
                        action = Some(None);
                    }
                });
            });
        if browse {
            self.browse(
                Target::Media,
                "Choose an ISO",
                Some(("ISO images", &["iso", "ISO"])),
                false,
            );
        }
        if let Some(iso) = action {
            let name = self.media.take().expect("checked above").name;
            self.run_job(&name, Job::Media { iso });
        } else if !open {
            self.media = None;
        }
    }
}

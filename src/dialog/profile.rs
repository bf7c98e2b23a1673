//! TEMPORARY stand-in for dialog profiles (replaced by the real implementation).
#![allow(missing_docs, clippy::all)]

#[derive(Debug, Default)]
pub struct Memberships;
#[derive(Debug, Default)]
pub struct Profiles;
#[derive(Debug)]
pub struct ProfileError;
impl Profiles {
    pub fn new(_a: &[String], _b: &[String]) -> Self {
        Profiles
    }
    pub fn rebuild(&self, _a: &[String], _b: &[String]) -> Self {
        Profiles
    }
    pub fn set(&self, _m: &Memberships, _p: &str, _v: Option<&[u8]>) -> Result<bool, ProfileError> {
        Err(ProfileError)
    }
    pub fn try_set_with_limit(
        &self,
        _m: &Memberships,
        _p: &str,
        _v: Option<&[u8]>,
        _max: u64,
    ) -> Result<bool, ProfileError> {
        Err(ProfileError)
    }
    pub fn unset(
        &self,
        _m: &Memberships,
        _p: &str,
        _v: Option<&[u8]>,
    ) -> Result<bool, ProfileError> {
        Err(ProfileError)
    }
    pub fn is_in(&self, _m: &Memberships, _p: &str, _v: Option<&[u8]>) -> bool {
        false
    }
    pub fn size(&self, _p: &str, _v: Option<&[u8]>) -> u64 {
        0
    }
    pub fn release_all(&self, _m: &Memberships) {}
    pub fn exists(&self, _p: &str) -> bool {
        false
    }
    pub fn memberships_of(&self, _m: &Memberships) -> Vec<(String, Option<String>)> {
        vec![]
    }
    pub fn top_values(&self, _n: usize) -> Vec<(String, Option<String>, u64)> {
        vec![]
    }
}
